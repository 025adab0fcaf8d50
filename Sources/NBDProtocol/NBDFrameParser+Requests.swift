import NIOCore

extension NBDFrameParser {
    /// Parses one request and its payload; discards oversized payloads without buffering them.
    mutating func nextRequest(extendedHeaders: Bool) throws(NBDProtocolError) -> NBDRequest? {
        if pendingRequest == nil {
            guard let header = try parseRequestHeader(extendedHeaders: extendedHeaders) else { return nil }
            pendingRequest = header
        }
        var pending = pendingRequest!
        if var remaining = pending.discardRemaining {
            if var bytes = buffer {
                let drop = Int(min(UInt64(bytes.readableBytes), remaining))
                bytes.moveReaderIndex(forwardBy: drop)
                remaining -= UInt64(drop)
                buffer = bytes.readableBytes > 0 ? bytes : nil
            }
            guard remaining == 0 else {
                pending.discardRemaining = remaining
                pendingRequest = pending
                return nil
            }
            pendingRequest = nil
            pending.request.payload = .discarded(length: Self.payloadLength(of: pending.request))
            return pending.request
        }
        guard pending.payloadLength > 0 else {
            pendingRequest = nil
            return pending.request
        }
        guard var bytes = buffer, bytes.readableBytes >= pending.payloadLength else {
            // Make room for the whole payload once instead of growing the buffer read by read.
            let missing = pending.payloadLength - bufferedBytes
            buffer = takeOwnedBuffer(reserving: missing)
            return nil
        }
        let payload = bytes.readSlice(length: pending.payloadLength)!
        buffer = bytes.readableBytes > 0 ? bytes : nil
        payloadSliceOutstanding = buffer != nil
        pending.request.payload = .data(payload)
        pendingRequest = nil
        return pending.request
    }

    private mutating func parseRequestHeader(extendedHeaders: Bool) throws(NBDProtocolError) -> PendingRequest? {
        let size = extendedHeaders ? FrameSize.extendedRequest : FrameSize.compactRequest
        guard var bytes = buffer, bytes.readableBytes >= size else { return nil }
        let magic = bytes.readInteger(as: UInt32.self)!
        let expected = extendedHeaders ? NBDMagic.extendedRequest : NBDMagic.request
        guard magic == expected else {
            throw NBDProtocolError(
                .badRequestMagic,
                "request magic 0x\(String(magic, radix: 16)), expected 0x\(String(expected, radix: 16))"
            )
        }
        let flags = NBDCommandFlags(rawValue: bytes.readInteger(as: UInt16.self)!)
        let type = NBDCommandType(rawValue: bytes.readInteger(as: UInt16.self)!)
        let cookie = bytes.readInteger(as: UInt64.self)!
        let offset = bytes.readInteger(as: UInt64.self)!
        let length: UInt64 =
            extendedHeaders
            ? bytes.readInteger(as: UInt64.self)! : UInt64(bytes.readInteger(as: UInt32.self)!)
        buffer = bytes.readableBytes > 0 ? bytes : nil

        let request = NBDRequest(
            flags: flags,
            type: type,
            cookie: cookie,
            offset: offset,
            length: length,
            isExtended: extendedHeaders
        )
        let payloadLength = Self.payloadLength(of: request)
        if payloadLength > UInt64(maximumDiscardedPayload) {
            throw NBDProtocolError(.payloadTooLarge, "\(type) carries a \(payloadLength)-byte payload")
        }
        if payloadLength > UInt64(maximumPayload) {
            return PendingRequest(request: request, payloadLength: 0, discardRemaining: payloadLength)
        }
        return PendingRequest(request: request, payloadLength: Int(payloadLength), discardRemaining: nil)
    }

    /// How many payload bytes follow a header.
    ///
    /// Compact headers: WRITE and NBD_CMD_CAIRN_COPY_AND_WRITE have a payload of *length* bytes. The latter
    /// is framed that way whether or not its context was negotiated, so refusing it never desynchronises
    /// the stream. Extended headers: a payload follows when NBD_CMD_FLAG_PAYLOAD_LEN is set (for any
    /// command; proto.md asks the server to consume it and fail the command), and also for every WRITE
    /// (qemu 10's client sends extended WRITEs without the flag) and COPY_AND_WRITE, for the same reason.
    static func payloadLength(of request: NBDRequest) -> UInt64 {
        if request.isExtended, request.flags.contains(.payloadLength) { return request.length }
        return carriesPayload(request.type) ? request.length : 0
    }

    /// Commands whose *length* is always the length of a payload that follows the header.
    static func carriesPayload(_ type: NBDCommandType) -> Bool {
        type == .write || type == .cairnCopyAndWrite
    }
}
