/// The type of a structured or extended reply chunk (proto.md "Structured reply types").
/// Error chunk types have bit 15 set.
public struct NBDReplyType: RawRepresentable, Sendable, Hashable {
    public let rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    /// `NBD_REPLY_TYPE_NONE` (0): empty, always with DONE.
    public static let none = NBDReplyType(rawValue: 0)
    /// `NBD_REPLY_TYPE_OFFSET_DATA` (1): 64-bit offset followed by data.
    public static let offsetData = NBDReplyType(rawValue: 1)
    /// `NBD_REPLY_TYPE_OFFSET_HOLE` (2): 64-bit offset and 32-bit hole size.
    public static let offsetHole = NBDReplyType(rawValue: 2)
    /// `NBD_REPLY_TYPE_BLOCK_STATUS` (5): 32-bit descriptors; never used with extended headers.
    public static let blockStatus = NBDReplyType(rawValue: 5)
    /// `NBD_REPLY_TYPE_BLOCK_STATUS_EXT` (6): 64-bit descriptors; only with extended headers.
    public static let blockStatusExtended = NBDReplyType(rawValue: 6)
    /// `NBD_REPLY_TYPE_ERROR` (2^15 + 1).
    public static let error = NBDReplyType(rawValue: (1 << 15) | 1)
    /// `NBD_REPLY_TYPE_ERROR_OFFSET` (2^15 + 2).
    public static let errorOffset = NBDReplyType(rawValue: (1 << 15) | 2)

    /// True for error chunk types.
    public var isError: Bool { rawValue & (1 << 15) != 0 }
}
