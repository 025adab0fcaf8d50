/// Why a request is refused, as it goes on the wire.
public struct NBDRequestRejection: Error, Sendable, Hashable {
    public var error: NBDWireError
    public var message: String

    public init(_ error: NBDWireError, _ message: String) {
        self.error = error
        self.message = message
    }
}

/// Checks a request against the negotiated session before it reaches the export. Pure: the same request
/// and session always give the same answer.
public enum NBDRequestValidator {
    /// Commands the transmission phase executes (DISC is handled before validation).
    static let executableCommands: Set<NBDCommandType> = [
        .read, .write, .flush, .trim, .cache, .writeZeroes, .blockStatus, .cairnCopyAndWrite,
    ]

    /// nil if the request may be executed, or the error to reply with.
    public static func validate(_ request: NBDRequest, session: NBDNegotiatedSession) -> NBDRequestRejection? {
        if case .discarded(let length) = request.payload {
            // proto.md "Block size constraints": EINVAL for a request "larger than the advertised maximum".
            return NBDRequestRejection(.invalid, "\(length)-byte payload exceeds the maximum payload size")
        }
        // proto.md "Error values": "The server SHOULD return NBD_EINVAL if it receives an unknown command."
        guard executableCommands.contains(request.type) else {
            return NBDRequestRejection(.invalid, "unknown command \(request.type)")
        }
        if let rejection = validateFlags(request, session: session) { return rejection }
        // Its *length* is a payload length and its range is in the payload: checked on its own.
        if request.type == .cairnCopyAndWrite { return validateCopyAndWrite(request, session: session) }
        if let rejection = validateSupport(request, session: session) { return rejection }
        return validateRange(request, session: session)
    }

    /// proto.md "Error values": "SHOULD return NBD_EINVAL if it receives an unknown command flag. It also
    /// SHOULD return NBD_EINVAL if it receives a request with a flag not explicitly documented as
    /// applicable to the given request."
    static func validateFlags(_ request: NBDRequest, session: NBDNegotiatedSession) -> NBDRequestRejection? {
        let flags = request.flags
        let advertised = session.transmissionFlags
        let unknown = flags.subtracting(.known)
        guard unknown.isEmpty else {
            return NBDRequestRejection(.invalid, "unknown command flags 0x\(String(unknown.rawValue, radix: 16))")
        }
        // FUA "is valid for all commands, provided NBD_FLAG_SEND_FUA has been negotiated".
        if flags.contains(.fua), !advertised.contains(.sendFUA) {
            return NBDRequestRejection(.invalid, "FUA was not advertised")
        }
        if flags.contains(.noHole), request.type != .writeZeroes {
            return NBDRequestRejection(.invalid, "NO_HOLE is only valid on WRITE_ZEROES")
        }
        if flags.contains(.dontFragment) {
            guard request.type == .read else { return NBDRequestRejection(.invalid, "DF is only valid on READ") }
            guard advertised.contains(.sendDF) else {
                return NBDRequestRejection(.invalid, "DF needs structured replies")
            }
        }
        if flags.contains(.requestOne), request.type != .blockStatus {
            return NBDRequestRejection(.invalid, "REQ_ONE is only valid on BLOCK_STATUS")
        }
        if flags.contains(.fastZero) {
            guard request.type == .writeZeroes else {
                return NBDRequestRejection(.invalid, "FAST_ZERO is only valid on WRITE_ZEROES")
            }
            // "If the server did not advertise NBD_FLAG_SEND_FAST_ZERO ... SHOULD fail with NBD_EINVAL".
            guard advertised.contains(.sendFastZero) else {
                return NBDRequestRejection(.invalid, "FAST_ZERO was not advertised")
            }
        }
        if flags.contains(.payloadLength) {
            guard request.isExtended else {
                return NBDRequestRejection(.invalid, "PAYLOAD_LEN needs extended headers")
            }
            // The payload was consumed; "the flag will trigger an NBD_EINVAL error unless the server has
            // advertised support for an extension payload form for the command".
            guard NBDFrameParser.carriesPayload(request.type) else {
                return NBDRequestRejection(.invalid, "\(request.type) takes no payload")
            }
        }
        return nil
    }

    /// Read-only exports refuse writes; commands the flags did not expose are refused.
    static func validateSupport(_ request: NBDRequest, session: NBDNegotiatedSession) -> NBDRequestRejection? {
        let advertised = session.transmissionFlags
        let writes: Set<NBDCommandType> = [.write, .trim, .writeZeroes]
        // proto.md "Error values": "SHOULD return NBD_EPERM if it receives a write or trim request on a
        // read-only export" (and the same for WRITE_ZEROES).
        if writes.contains(request.type), advertised.contains(.readOnly) {
            return NBDRequestRejection(.permissionDenied, "export is read-only")
        }
        let required: NBDTransmissionFlags? =
            switch request.type {
            case .flush: .sendFlush
            case .trim: .sendTrim
            case .writeZeroes: .sendWriteZeroes
            case .cache: .sendCache
            default: nil
            }
        if let required, !advertised.contains(required) {
            return NBDRequestRejection(.invalid, "\(request.type) was not advertised")
        }
        if request.type == .blockStatus, session.metaContexts.isEmpty {
            // "Servers SHOULD reply with NBD_EINVAL to clients sending NBD_CMD_BLOCK_STATUS without
            // selecting at least one metadata context."
            return NBDRequestRejection(.invalid, "no metadata context was negotiated")
        }
        if request.type == .flush, request.offset != 0 || request.length != 0 {
            // "For a flush request, *length* and *offset* are reserved, and MUST be set to all-zero."
            return NBDRequestRejection(.invalid, "FLUSH with nonzero offset or length")
        }
        return nil
    }

    /// Bounds, alignment, payload size and zero lengths.
    static func validateRange(_ request: NBDRequest, session: NBDNegotiatedSession) -> NBDRequestRejection? {
        guard request.type != .flush else { return nil }
        let export = session.export
        // proto.md says a client SHOULD NOT send a zero length and the server SHOULD NOT disconnect; the
        // behaviour is otherwise unspecified. READ/WRITE/TRIM/WRITE_ZEROES/CACHE of nothing succeed without
        // touching the export (as qemu-nbd does). BLOCK_STATUS fails: its reply needs a nonzero extent,
        // and with REQ_ONE that extent may not exceed the zero request length.
        if request.length == 0, request.type == .blockStatus {
            return NBDRequestRejection(.invalid, "BLOCK_STATUS needs a nonzero length")
        }
        let (end, overflow) = request.offset.addingReportingOverflow(request.length)
        if overflow || end > export.size {
            // "The server SHOULD return NBD_ENOSPC if it receives a write request including one or more
            // sectors beyond the size of the device" (WRITE_ZEROES: "SHOULD return NBD_ENOSPC" too), and
            // "SHOULD return NBD_EINVAL if it receives a read or trim request" (BLOCK_STATUS: EINVAL too).
            let error: NBDWireError = request.type == .write || request.type == .writeZeroes ? .noSpace : .invalid
            return NBDRequestRejection(error, "\(request.type) beyond the end of the export")
        }
        let minimum = UInt64(max(export.blockSizes.minimum, 1))
        if request.offset % minimum != 0 || request.length % minimum != 0 {
            // "The server SHOULD report an NBD_EINVAL error if the client's request is not aligned to
            // advertised minimum block size boundaries".
            return NBDRequestRejection(.invalid, "\(request.type) not aligned to \(minimum) bytes")
        }
        let maximumPayload = UInt64(export.blockSizes.maximumPayload)
        if request.type == .read, request.length > maximumPayload {
            // READ carries no request payload; proto.md allows EOVERFLOW "when a command without payload
            // requests a length larger than an advertised maximum payload length".
            return NBDRequestRejection(.overflow, "READ of \(request.length) bytes exceeds the maximum payload")
        }
        if request.type == .write, request.length > maximumPayload {
            return NBDRequestRejection(.invalid, "WRITE of \(request.length) bytes exceeds the maximum payload")
        }
        return nil
    }
}
