import NIOCore

/// One transmission request, compact or extended, with its WRITE payload.
public struct NBDRequest: Sendable {
    /// Command flags as sent (unknown bits preserved so validation can refuse them).
    public var flags: NBDCommandFlags
    /// The command.
    public var type: NBDCommandType
    /// Opaque cookie (formerly "handle") echoed in every reply chunk.
    public var cookie: UInt64
    /// Offset in the export.
    public var offset: UInt64
    /// Effect length, or the payload length for WRITE (and for extended requests with PAYLOAD_LEN).
    public var length: UInt64
    /// What followed the header.
    public var payload: NBDRequestPayload
    /// True if the request used the 32-byte extended header.
    public var isExtended: Bool

    public init(
        flags: NBDCommandFlags,
        type: NBDCommandType,
        cookie: UInt64,
        offset: UInt64,
        length: UInt64,
        payload: NBDRequestPayload = .none,
        isExtended: Bool = false
    ) {
        self.flags = flags
        self.type = type
        self.cookie = cookie
        self.offset = offset
        self.length = length
        self.payload = payload
        self.isExtended = isExtended
    }
}

/// The bytes that followed a request header.
public enum NBDRequestPayload: Sendable {
    /// No payload.
    case none
    /// The payload, a slice of the receive buffer (not copied).
    case data(ByteBuffer)
    /// A payload too large to buffer that was read and dropped; the request must be failed.
    case discarded(length: UInt64)

    /// Bytes held in memory for this payload.
    public var bufferedBytes: Int {
        if case .data(let buffer) = self { return buffer.readableBytes }
        return 0
    }
}
