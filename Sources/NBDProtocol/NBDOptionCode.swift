/// An option code of fixed newstyle negotiation (proto.md "Option types").
public struct NBDOptionCode: RawRepresentable, Sendable, Hashable, CustomStringConvertible {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// `NBD_OPT_EXPORT_NAME` (1): choose an export and enter transmission; cannot report errors.
    public static let exportName = NBDOptionCode(rawValue: 1)
    /// `NBD_OPT_ABORT` (2): soft disconnect during negotiation.
    public static let abort = NBDOptionCode(rawValue: 2)
    /// `NBD_OPT_LIST` (3): list exports.
    public static let list = NBDOptionCode(rawValue: 3)
    /// `NBD_OPT_PEEK_EXPORT` (4): withdrawn; answered as unsupported.
    public static let peekExport = NBDOptionCode(rawValue: 4)
    /// `NBD_OPT_STARTTLS` (5).
    public static let startTLS = NBDOptionCode(rawValue: 5)
    /// `NBD_OPT_INFO` (6).
    public static let info = NBDOptionCode(rawValue: 6)
    /// `NBD_OPT_GO` (7).
    public static let go = NBDOptionCode(rawValue: 7)
    /// `NBD_OPT_STRUCTURED_REPLY` (8).
    public static let structuredReply = NBDOptionCode(rawValue: 8)
    /// `NBD_OPT_LIST_META_CONTEXT` (9).
    public static let listMetaContext = NBDOptionCode(rawValue: 9)
    /// `NBD_OPT_SET_META_CONTEXT` (10).
    public static let setMetaContext = NBDOptionCode(rawValue: 10)
    /// `NBD_OPT_EXTENDED_HEADERS` (11).
    public static let extendedHeaders = NBDOptionCode(rawValue: 11)

    public var description: String {
        switch self {
        case .exportName: "EXPORT_NAME"
        case .abort: "ABORT"
        case .list: "LIST"
        case .peekExport: "PEEK_EXPORT"
        case .startTLS: "STARTTLS"
        case .info: "INFO"
        case .go: "GO"
        case .structuredReply: "STRUCTURED_REPLY"
        case .listMetaContext: "LIST_META_CONTEXT"
        case .setMetaContext: "SET_META_CONTEXT"
        case .extendedHeaders: "EXTENDED_HEADERS"
        default: "option(\(rawValue))"
        }
    }
}
