/// One structured or extended reply chunk (proto.md "Structured reply types").
public enum NBDReplyChunk: Sendable, Hashable {
    /// `NBD_REPLY_TYPE_NONE`: must carry DONE.
    case none
    /// `NBD_REPLY_TYPE_OFFSET_DATA` header: the encoder writes the chunk header and the 64-bit offset;
    /// the caller writes the `dataLength` data bytes as a separate buffer so they are never copied.
    case offsetData(offset: UInt64, dataLength: Int)
    /// `NBD_REPLY_TYPE_OFFSET_HOLE`: still a 32-bit hole size even with extended headers.
    case offsetHole(offset: UInt64, length: UInt32)
    /// `NBD_REPLY_TYPE_BLOCK_STATUS`: 32-bit descriptors (compact framing only).
    case blockStatus(contextID: UInt32, descriptors: [NBDBlockDescriptor])
    /// `NBD_REPLY_TYPE_BLOCK_STATUS_EXT`: 64-bit descriptors (extended headers only).
    case blockStatusExtended(contextID: UInt32, descriptors: [NBDBlockDescriptor])
    /// `NBD_REPLY_TYPE_ERROR`.
    case error(NBDWireError, message: String)
    /// `NBD_REPLY_TYPE_ERROR_OFFSET`.
    case errorOffset(NBDWireError, message: String, offset: UInt64)

    /// The chunk type on the wire.
    public var type: NBDReplyType {
        switch self {
        case .none: .none
        case .offsetData: .offsetData
        case .offsetHole: .offsetHole
        case .blockStatus: .blockStatus
        case .blockStatusExtended: .blockStatusExtended
        case .error: .error
        case .errorOffset: .errorOffset
        }
    }
}

/// One block status descriptor: an extent length and the context's status flags.
public struct NBDBlockDescriptor: Sendable, Hashable {
    public var length: UInt64
    public var flags: UInt32

    public init(length: UInt64, flags: UInt32) {
        self.length = length
        self.flags = flags
    }
}

/// How transmission replies are framed, fixed by the handshake.
public enum NBDReplyStyle: Sendable, Hashable {
    /// Only simple replies (nothing negotiated).
    case simple
    /// `NBD_OPT_STRUCTURED_REPLY`: 20-byte chunk headers (simple replies still allowed without payload).
    case structured
    /// `NBD_OPT_EXTENDED_HEADERS`: 32-byte chunk headers for every reply; simple replies forbidden.
    case extended
}
