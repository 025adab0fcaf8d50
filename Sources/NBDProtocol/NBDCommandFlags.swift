/// The 16 command flags of a request (proto.md "Command flags").
public struct NBDCommandFlags: OptionSet, Sendable, Hashable {
    public let rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    /// `NBD_CMD_FLAG_FUA`: valid on every command once `NBD_FLAG_SEND_FUA` is advertised.
    public static let fua = NBDCommandFlags(rawValue: 1 << 0)
    /// `NBD_CMD_FLAG_NO_HOLE`: WRITE_ZEROES must leave the range allocated.
    public static let noHole = NBDCommandFlags(rawValue: 1 << 1)
    /// `NBD_CMD_FLAG_DF`: READ answered with at most one content chunk.
    public static let dontFragment = NBDCommandFlags(rawValue: 1 << 2)
    /// `NBD_CMD_FLAG_REQ_ONE`: BLOCK_STATUS answered with one extent per context.
    public static let requestOne = NBDCommandFlags(rawValue: 1 << 3)
    /// `NBD_CMD_FLAG_FAST_ZERO`: WRITE_ZEROES fails with ENOTSUP unless it is fast.
    public static let fastZero = NBDCommandFlags(rawValue: 1 << 4)
    /// `NBD_CMD_FLAG_PAYLOAD_LEN`: extended headers only; *length* is a payload length.
    public static let payloadLength = NBDCommandFlags(rawValue: 1 << 5)

    /// Every flag this server understands.
    public static let known: NBDCommandFlags = [.fua, .noHole, .dontFragment, .requestOne, .fastZero, .payloadLength]
}

/// The 16 flags of a structured or extended reply chunk (proto.md "Structured reply flags").
public struct NBDReplyFlags: OptionSet, Sendable, Hashable {
    public let rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    /// `NBD_REPLY_FLAG_DONE`: the final chunk of a reply.
    public static let done = NBDReplyFlags(rawValue: 1 << 0)
}
