/// The type of a transmission request (proto.md "Request types").
public struct NBDCommandType: RawRepresentable, Sendable, Hashable, CustomStringConvertible {
    public let rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    /// `NBD_CMD_READ` (0).
    public static let read = NBDCommandType(rawValue: 0)
    /// `NBD_CMD_WRITE` (1): the only command whose compact header is followed by a payload.
    public static let write = NBDCommandType(rawValue: 1)
    /// `NBD_CMD_DISC` (2): soft disconnect; no reply.
    public static let disconnect = NBDCommandType(rawValue: 2)
    /// `NBD_CMD_FLUSH` (3).
    public static let flush = NBDCommandType(rawValue: 3)
    /// `NBD_CMD_TRIM` (4).
    public static let trim = NBDCommandType(rawValue: 4)
    /// `NBD_CMD_CACHE` (5).
    public static let cache = NBDCommandType(rawValue: 5)
    /// `NBD_CMD_WRITE_ZEROES` (6).
    public static let writeZeroes = NBDCommandType(rawValue: 6)
    /// `NBD_CMD_BLOCK_STATUS` (7).
    public static let blockStatus = NBDCommandType(rawValue: 7)
    /// `NBD_CMD_RESIZE` (8): experimental, not supported (answered EINVAL).
    public static let resize = NBDCommandType(rawValue: 8)

    public var description: String {
        switch self {
        case .read: "READ"
        case .write: "WRITE"
        case .disconnect: "DISC"
        case .flush: "FLUSH"
        case .trim: "TRIM"
        case .cache: "CACHE"
        case .writeZeroes: "WRITE_ZEROES"
        case .blockStatus: "BLOCK_STATUS"
        case .resize: "RESIZE"
        case .cairnCopyAndWrite: "CAIRN_COPY_AND_WRITE"
        default: "command(\(rawValue))"
        }
    }
}
