/// An information type of NBD_OPT_INFO / NBD_OPT_GO (proto.md "NBD_REP_INFO").
public struct NBDInfoType: RawRepresentable, Sendable, Hashable {
    public let rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    /// `NBD_INFO_EXPORT` (0): size and transmission flags; always sent before a successful ACK.
    public static let export = NBDInfoType(rawValue: 0)
    /// `NBD_INFO_NAME` (1): canonical export name.
    public static let name = NBDInfoType(rawValue: 1)
    /// `NBD_INFO_DESCRIPTION` (2): human-readable description.
    public static let description = NBDInfoType(rawValue: 2)
    /// `NBD_INFO_BLOCK_SIZE` (3): minimum, preferred and maximum payload sizes.
    public static let blockSize = NBDInfoType(rawValue: 3)
}
