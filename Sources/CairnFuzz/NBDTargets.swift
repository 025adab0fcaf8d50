/// NBD constants spelled out here on purpose: the fuzzer's client must not share the server's codec,
/// or a bug in it would hide on both sides.
private enum Wire {
    static let greetingLength = 18  // "NBDMAGIC", IHAVEOPT, 16-bit handshake flags
    static let optionMagic: UInt64 = 0x4948_4156_454F_5054  // "IHAVEOPT"
    static let optionReplyMagic: UInt64 = 0x0003_e889_0455_65a9
    static let requestMagic: UInt32 = 0x2560_9513
    static let extendedRequestMagic: UInt32 = 0x21e4_1c71
    static let clientFlags: UInt32 = 0b11  // FIXED_NEWSTYLE | NO_ZEROES
    static let replyAck: UInt32 = 1
    static let optionGo: UInt32 = 7
    static let optionStructuredReply: UInt32 = 8
    static let optionSetMetaContext: UInt32 = 10
    static let optionExtendedHeaders: UInt32 = 11
    static let commandCopyAndWrite: UInt16 = 0xCA01
    /// Longest payload an input sends in full; longer declared lengths send what the input has and
    /// then EOF, which is a path worth fuzzing too.
    static let largestPayload = 1 << 16
}

private extension Array where Element == UInt8 {
    mutating func append<T: FixedWidthInteger>(big value: T) {
        Swift.withUnsafeBytes(of: value.bigEndian) { append(contentsOf: $0) }
    }

    mutating func appendOption(_ code: UInt32, _ data: [UInt8]) {
        append(big: Wire.optionMagic)
        append(big: code)
        append(big: UInt32(data.count))
        append(contentsOf: data)
    }

    mutating func appendString(_ text: String) {
        append(big: UInt32(text.utf8.count))
        append(contentsOf: Array(text.utf8))
    }
}

extension LoopbackConnection {
    /// Reads option replies until the final one for `option`; false if the server refused or closed.
    func awaitOptionAck() -> Bool {
        while let header = receive(20) {
            let type = header[12..<16].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
            let length = header[16..<20].reduce(0) { $0 << 8 | Int($1) }
            guard length == 0 || receive(length) != nil else { return false }
            if type == Wire.replyAck { return true }
            if type & 0x8000_0000 != 0 { return false }
        }
        return false
    }
}

extension FuzzTarget {
    /// The option haggling phase, from the client's flags on: raw bytes (first byte even) or a list of
    /// well-framed options with fuzzed codes and data (odd), ending however the input ends.
    static let nbdHandshake = FuzzTarget(
        name: "nbd-handshake", summary: "NBD option negotiation against the real daemon and engine"
    ) { bytes in
        let daemon = FuzzDaemon.shared
        let connection = LoopbackConnection(port: daemon.nbdPort)
        guard connection.receive(Wire.greetingLength) != nil else { fatalError("no NBD greeting") }
        var input = FuzzInput(bytes)
        var stream: [UInt8] = []
        if input.byte() & 1 == 0 {
            stream = input.rest()
        } else {
            stream.append(big: Wire.clientFlags)
            while !input.isAtEnd {
                let code = UInt32(input.byte() % 16)
                let length = Int(input.integer(UInt16.self) % 512)
                stream.appendOption(code, input.bytes(length))
            }
        }
        connection.send(stream)
        connection.finish()
    }

    /// The transmission phase of a session on `fuzz` (or its snapshot), after a correct handshake with
    /// structured replies or extended headers and both metadata contexts: a list of requests with
    /// correct magic and fuzzed type, flags, offset, length and payload.
    static let nbdTransmission = FuzzTarget(
        name: "nbd-transmission", summary: "NBD requests on an open export of the real daemon and engine"
    ) { bytes in
        let daemon = FuzzDaemon.shared
        var input = FuzzInput(bytes)
        let mode = input.byte()
        let extended = mode & 1 != 0
        let export = mode & 2 != 0 ? "\(FuzzDaemon.volumeName)@\(FuzzDaemon.snapshotName)" : FuzzDaemon.volumeName
        let connection = LoopbackConnection(port: daemon.nbdPort)
        guard connection.receive(Wire.greetingLength) != nil else { fatalError("no NBD greeting") }
        var handshake: [UInt8] = []
        handshake.append(big: Wire.clientFlags)
        handshake.appendOption(extended ? Wire.optionExtendedHeaders : Wire.optionStructuredReply, [])
        guard connection.send(handshake), connection.awaitOptionAck() else { fatalError("handshake refused") }
        var contexts: [UInt8] = []
        contexts.appendString(export)
        contexts.append(big: UInt32(2))
        contexts.appendString("base:allocation")
        contexts.appendString("x-cairn:copy-on-write")
        var metaContext: [UInt8] = []
        metaContext.appendOption(Wire.optionSetMetaContext, contexts)
        guard connection.send(metaContext), connection.awaitOptionAck() else { fatalError("SET_META_CONTEXT refused") }
        var go: [UInt8] = []
        go.appendString(export)
        go.append(big: UInt16(0))
        var goOption: [UInt8] = []
        goOption.appendOption(Wire.optionGo, go)
        guard connection.send(goOption), connection.awaitOptionAck() else { fatalError("NBD_OPT_GO refused for \(export)") }

        var stream: [UInt8] = []
        var cookie: UInt64 = 0
        while !input.isAtEnd {
            let selector = input.byte()
            let type = selector < 0xF0 ? UInt16(selector % 10) : Wire.commandCopyAndWrite
            let flags = input.integer(UInt16.self)
            // Offsets in 512-byte units reach a little past the end of the 16 MiB volume.
            let offset = UInt64(input.integer(UInt16.self)) * 512 + UInt64(input.byte() % 4) * 128
            let length = UInt64(input.integer(UInt32.self) & 0x01FF_FFFF)
            cookie += 1
            stream.append(big: extended ? Wire.extendedRequestMagic : Wire.requestMagic)
            stream.append(big: flags)
            stream.append(big: type)
            stream.append(big: cookie)
            stream.append(big: offset)
            if extended { stream.append(big: length) } else { stream.append(big: UInt32(truncatingIfNeeded: length)) }
            let carriesPayload = type == 1 || type == Wire.commandCopyAndWrite || (extended && flags & (1 << 5) != 0)
            if carriesPayload {
                var payload = input.bytes(Int(min(length, UInt64(Wire.largestPayload))))
                if length <= UInt64(Wire.largestPayload) {
                    payload += [UInt8](repeating: 0, count: Int(length) - payload.count)
                }
                stream += payload
            }
        }
        connection.send(stream)
        connection.finish()
    }
}
