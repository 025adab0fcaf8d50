/// The reply type of an option reply (proto.md "Option reply types"). Errors have bit 31 set.
public struct NBDOptionReplyType: RawRepresentable, Sendable, Hashable, CustomStringConvertible {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    private static func error(_ value: UInt32) -> NBDOptionReplyType {
        NBDOptionReplyType(rawValue: (1 << 31) | value)
    }

    /// `NBD_REP_ACK` (1).
    public static let ack = NBDOptionReplyType(rawValue: 1)
    /// `NBD_REP_SERVER` (2): one export in answer to NBD_OPT_LIST.
    public static let server = NBDOptionReplyType(rawValue: 2)
    /// `NBD_REP_INFO` (3).
    public static let info = NBDOptionReplyType(rawValue: 3)
    /// `NBD_REP_META_CONTEXT` (4).
    public static let metaContext = NBDOptionReplyType(rawValue: 4)

    /// `NBD_REP_ERR_UNSUP`: option unknown to this server.
    public static let errorUnsupported = error(1)
    /// `NBD_REP_ERR_POLICY`: known and valid, but forbidden by policy.
    public static let errorPolicy = error(2)
    /// `NBD_REP_ERR_INVALID`: syntactically or semantically invalid.
    public static let errorInvalid = error(3)
    /// `NBD_REP_ERR_PLATFORM`: not supported on this platform.
    public static let errorPlatform = error(4)
    /// `NBD_REP_ERR_TLS_REQD`: TLS must be negotiated first.
    public static let errorTLSRequired = error(5)
    /// `NBD_REP_ERR_UNKNOWN`: the export does not exist.
    public static let errorUnknown = error(6)
    /// `NBD_REP_ERR_SHUTDOWN`: the server is shutting down.
    public static let errorShutdown = error(7)
    /// `NBD_REP_ERR_BLOCK_SIZE_REQD`: the client must request NBD_INFO_BLOCK_SIZE.
    public static let errorBlockSizeRequired = error(8)
    /// `NBD_REP_ERR_TOO_BIG`: request or reply too large.
    public static let errorTooBig = error(9)
    /// `NBD_REP_ERR_EXT_HEADER_REQD`: extended headers required, or already negotiated (for STRUCTURED_REPLY).
    public static let errorExtendedHeaderRequired = error(10)

    /// True for the `NBD_REP_ERR_*` family.
    public var isError: Bool { rawValue & (1 << 31) != 0 }

    public var description: String {
        switch self {
        case .ack: "ACK"
        case .server: "SERVER"
        case .info: "INFO"
        case .metaContext: "META_CONTEXT"
        case .errorUnsupported: "ERR_UNSUP"
        case .errorPolicy: "ERR_POLICY"
        case .errorInvalid: "ERR_INVALID"
        case .errorPlatform: "ERR_PLATFORM"
        case .errorTLSRequired: "ERR_TLS_REQD"
        case .errorUnknown: "ERR_UNKNOWN"
        case .errorShutdown: "ERR_SHUTDOWN"
        case .errorBlockSizeRequired: "ERR_BLOCK_SIZE_REQD"
        case .errorTooBig: "ERR_TOO_BIG"
        case .errorExtendedHeaderRequired: "ERR_EXT_HEADER_REQD"
        default: "reply(\(rawValue))"
        }
    }
}
