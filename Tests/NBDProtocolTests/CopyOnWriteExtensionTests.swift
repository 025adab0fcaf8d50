import NBDProtocol
import NIOCore
import Testing

/// NBD_CMD_CAIRN_COPY_AND_WRITE and `x-cairn:copy-on-write` in the pure layer: framing, payload layout,
/// validation order, and how the handshake lists the context (docs/NBD-EXTENSIONS.md).
@Suite("copy-on-write extension")
struct CopyOnWriteExtensionTests {
    static let context = NBDSelectedMetaContext(id: 2, name: NBDCopyOnWrite.contextName)

    /// source offset, copy size, buffer offset, then the buffer.
    static func payload(source: UInt64, copySize: UInt32, bufferOffset: UInt32, buffer: [UInt8]) -> [UInt8] {
        var bytes = ByteBuffer()
        bytes.writeNBDCopyAndWritePayloadHeader(
            NBDCopyAndWritePayload(
                sourceOffset: source, copySize: copySize, bufferOffset: bufferOffset, buffer: ByteBuffer()))
        return Array(bytes.readableBytesView) + buffer
    }

    @Test("names and numbers: x-cairn namespace, CAIRN_STATE_SHARED = 1, command 0xCA01")
    func constants() {
        #expect(NBDMetaContext.cairnCopyOnWrite == "x-cairn:copy-on-write")
        #expect(NBDCopyOnWriteState.shared.rawValue == 1)
        #expect(NBDCommandType.cairnCopyAndWrite.rawValue == 0xCA01)
        #expect("\(NBDCommandType.cairnCopyAndWrite)" == "CAIRN_COPY_AND_WRITE")
    }

    @Test("payload golden bytes: source 64, copy size 32, buffer offset 32, buffer")
    func payloadLayout() throws {
        let bytes = Self.payload(
            source: 0x0102_0304_0506_0708, copySize: 0x0001_0000, bufferOffset: 0x4000, buffer: [0xaa, 0xbb])
        #expect(bytes == [1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 0, 0, 0, 0x40, 0, 0xaa, 0xbb])
        let decoded = try #require(NBDCopyAndWritePayload(decoding: ByteBuffer(bytes: bytes)))
        #expect(
            decoded.sourceOffset == 0x0102_0304_0506_0708 && decoded.copySize == 65536 && decoded.bufferOffset == 0x4000
        )
        #expect(Array(decoded.buffer.readableBytesView) == [0xaa, 0xbb] && decoded.encodedLength == 18)
        #expect(NBDCopyAndWritePayload(decoding: ByteBuffer(bytes: Array(bytes.prefix(15)))) == nil)
    }

    @Test("the frame parser consumes the payload of length bytes, with or without the context, compact or extended")
    func framing() throws {
        var parser = NBDFrameParser()
        _ = try parser.feed(ByteBuffer(bytes: [0, 0, 0, 1]))
        parser.enterTransmission(extendedHeaders: false)
        let body = Self.payload(source: 0, copySize: 4096, bufferOffset: 0, buffer: [1, 2, 3, 4])
        var stream = Wire.request(.cairnCopyAndWrite, offset: 8192, length: UInt64(body.count), payload: body)
        stream.writeImmutableBuffer(Wire.request(.read, offset: 0, length: 512))
        let parsed = try parser.feedBytewise(stream).compactMap { if case .request(let r) = $0 { r } else { nil } }
        #expect(parsed.map(\.type) == [.cairnCopyAndWrite, .read])
        #expect(parsed[0].payload.bufferedBytes == body.count && parsed[1].length == 512)

        var extended = NBDFrameParser()
        _ = try extended.feed(ByteBuffer(bytes: [0, 0, 0, 1]))
        extended.enterTransmission(extendedHeaders: true)
        var extendedStream = Wire.request(
            .cairnCopyAndWrite, flags: .payloadLength, length: UInt64(body.count), payload: body, extended: true)
        // Without PAYLOAD_LEN it is framed the same way, as WRITE is for qemu 10's sake.
        extendedStream.writeImmutableBuffer(
            Wire.request(.cairnCopyAndWrite, length: UInt64(body.count), payload: body, extended: true))
        extendedStream.writeImmutableBuffer(Wire.request(.flush, length: 0, extended: true))
        let extendedParsed = try extended.feed(extendedStream).compactMap {
            if case .request(let r) = $0 { r } else { nil }
        }
        #expect(extendedParsed.map(\.payload.bufferedBytes) == [body.count, body.count, 0])
    }

    @Test("payload limits are WRITE's: over the maximum it is discarded and refused, over the discard limit fatal")
    func payloadLimits() throws {
        var parser = NBDFrameParser(maximumPayload: 32, maximumDiscardedPayload: 64)
        _ = try parser.feed(ByteBuffer(bytes: [0, 0, 0, 1]))
        parser.enterTransmission(extendedHeaders: false)
        let body = Self.payload(source: 0, copySize: 4096, bufferOffset: 0, buffer: .init(repeating: 1, count: 32))
        var stream = Wire.request(.cairnCopyAndWrite, length: UInt64(body.count), payload: body)
        stream.writeImmutableBuffer(Wire.request(.flush, length: 0))
        let parsed = try parser.feed(stream).compactMap { if case .request(let r) = $0 { r } else { nil } }
        guard case .discarded(let length) = parsed.first?.payload else {
            Issue.record("\(parsed)")
            return
        }
        #expect(length == 48 && parsed.map(\.type) == [.cairnCopyAndWrite, .flush])
        let refused = NBDRequestValidator.validate(parsed[0], session: ValidatorTests.session(contexts: [Self.context]))
        #expect(refused?.error == .invalid)
        #expect { try parser.feed(Wire.request(.cairnCopyAndWrite, length: 65)) } throws: {
            ($0 as? NBDProtocolError)?.code == .payloadTooLarge
        }
    }

    func rejection(
        offset: UInt64 = 65536,
        flags: NBDCommandFlags = [],
        body: [UInt8]? = nil,
        contexts: [NBDSelectedMetaContext] = [CopyOnWriteExtensionTests.context],
        readOnly: Bool = false,
        extended: Bool = false
    ) -> NBDRequestRejection? {
        var sessionFlags: NBDTransmissionFlags = [.hasFlags, .sendFlush, .sendFUA]
        if readOnly { sessionFlags.insert(.readOnly) }
        let session = ValidatorTests.session(flags: sessionFlags, contexts: contexts)
        let bytes =
            body
            ?? Self.payload(source: 0, copySize: 65536, bufferOffset: 4096, buffer: .init(repeating: 7, count: 512))
        let request = NBDRequest(
            flags: flags, type: .cairnCopyAndWrite, cookie: 1, offset: offset, length: UInt64(bytes.count),
            payload: .data(ByteBuffer(bytes: bytes)), isExtended: extended)
        return NBDRequestValidator.validate(request, session: session)
    }

    @Test("validation: context first (EINVAL), then read-only (EPERM), then payload and range")
    func validation() {
        #expect(rejection() == nil)
        #expect(rejection(flags: .fua) == nil)
        #expect(rejection(flags: .payloadLength, extended: true) == nil)
        // Not negotiated: the command does not exist on this connection, even on a read-only export.
        #expect(rejection(contexts: [NBDSelectedMetaContext(id: 1, name: "base:allocation")])?.error == .invalid)
        #expect(rejection(contexts: [], readOnly: true)?.error == .invalid)
        #expect(rejection(readOnly: true)?.error == .permissionDenied)
        // Flags documented for other commands.
        #expect(rejection(flags: .noHole)?.error == .invalid)
        #expect(rejection(flags: .payloadLength)?.error == .invalid, "PAYLOAD_LEN needs extended headers")
        // Payload: too short, no buffer.
        #expect(rejection(body: [0, 0, 0])?.error == .invalid)
        #expect(
            rejection(body: Self.payload(source: 0, copySize: 65536, bufferOffset: 0, buffer: []))?.error == .invalid)
        // Alignment to the 512-byte minimum block size: target, source, copy size, buffer offset and length.
        #expect(rejection(offset: 65537)?.error == .invalid)
        let buffer512 = [UInt8](repeating: 1, count: 512)
        #expect(
            rejection(body: Self.payload(source: 100, copySize: 65536, bufferOffset: 0, buffer: buffer512))?.error
                == .invalid)
        #expect(
            rejection(body: Self.payload(source: 0, copySize: 65000, bufferOffset: 0, buffer: buffer512))?.error
                == .invalid)
        #expect(
            rejection(body: Self.payload(source: 0, copySize: 65536, bufferOffset: 1, buffer: buffer512))?.error
                == .invalid)
        #expect(
            rejection(body: Self.payload(source: 0, copySize: 65536, bufferOffset: 0, buffer: [1]))?.error == .invalid)
        // The buffer must fit inside the chunk.
        let beyond = Self.payload(source: 0, copySize: 4096, bufferOffset: 4096, buffer: buffer512)
        #expect(rejection(body: beyond)?.error == .invalid)
        // Target past the end is a write beyond the device (ENOSPC), source past the end a read (EINVAL).
        #expect(rejection(offset: (1 << 24) - 32768)?.error == .noSpace)
        let farSource = Self.payload(source: 1 << 24, copySize: 65536, bufferOffset: 0, buffer: buffer512)
        #expect(rejection(body: farSource)?.error == .invalid)
        let overflow = Self.payload(source: UInt64.max - 511, copySize: 65536, bufferOffset: 0, buffer: buffer512)
        #expect(rejection(body: overflow)?.error == .invalid)
        // Above the advertised maximum payload (1 MiB in this session).
        let huge = Self.payload(
            source: 0, copySize: 4 << 20, bufferOffset: 0, buffer: .init(repeating: 0, count: 2 << 20))
        #expect(rejection(body: huge)?.error == .invalid)
        // Every refusal says why.
        #expect(rejection(readOnly: true)?.message.isEmpty == false)
    }

    @Test("LIST_META_CONTEXT: listed for no query and for x-cairn:, never for base:; SET needs the exact name")
    func listing() {
        var directory = FakeDirectory()
        directory.exports[0].metaContexts = ["base:allocation", NBDCopyOnWrite.contextName]
        var machine = NBDHandshakeStateMachine(directory: directory)
        _ = machine.start()
        _ = machine.clientFlagsReceived([.fixedNewstyle, .noZeroes])
        _ = machine.optionReceived(.structuredReply)
        func names(_ action: NBDHandshakeStateMachine.Action) -> [String] {
            guard case .reply(_, let replies) = action else { return [] }
            return replies.compactMap { if case .metaContext(_, let name) = $0 { name } else { nil } }
        }
        func list(_ queries: [String]) -> [String] {
            names(machine.optionReceived(.listMetaContext(NBDMetaContextRequest(exportName: "disk", queries: queries))))
        }
        #expect(list([]) == ["base:allocation", "x-cairn:copy-on-write"])
        #expect(list(["base:"]) == ["base:allocation"])
        #expect(list(["x-cairn:"]) == ["x-cairn:copy-on-write"])
        #expect(list(["cairn:"]).isEmpty, "not the unregistered bare namespace")
        let set = { (queries: [String]) in
            names(machine.optionReceived(.setMetaContext(NBDMetaContextRequest(exportName: "disk", queries: queries))))
        }
        #expect(set(["x-cairn:"]).isEmpty)
        #expect(set(["base:allocation", "x-cairn:copy-on-write"]) == ["base:allocation", "x-cairn:copy-on-write"])
    }
}
