/// A client option of fixed newstyle negotiation, parsed into its typed payload.
///
/// Options whose data does not match the spec's layout arrive as `malformed`, so the handshake can answer
/// `NBD_REP_ERR_INVALID` instead of hanging up; unknown codes arrive as `unknown` with their data skipped.
public enum NBDOption: Sendable, Hashable {
    /// `NBD_OPT_EXPORT_NAME`: the data is the export name.
    case exportName(String)
    /// `NBD_OPT_ABORT`. Any data is ignored, as proto.md asks ("a server SHOULD ignore any data").
    case abort
    /// `NBD_OPT_LIST` (no data).
    case list
    /// `NBD_OPT_STARTTLS` (no data).
    case startTLS
    /// `NBD_OPT_INFO`.
    case info(NBDInfoRequest)
    /// `NBD_OPT_GO`.
    case go(NBDInfoRequest)
    /// `NBD_OPT_STRUCTURED_REPLY` (no data).
    case structuredReply
    /// `NBD_OPT_LIST_META_CONTEXT`.
    case listMetaContext(NBDMetaContextRequest)
    /// `NBD_OPT_SET_META_CONTEXT`.
    case setMetaContext(NBDMetaContextRequest)
    /// `NBD_OPT_EXTENDED_HEADERS` (no data).
    case extendedHeaders
    /// An option this server does not implement; its data has been skipped.
    case unknown(NBDOptionCode)
    /// A known option whose data is invalid (wrong length, bad string, trailing bytes).
    case malformed(NBDOptionCode, reason: String)

    /// The option code to echo in replies.
    public var code: NBDOptionCode {
        switch self {
        case .exportName: .exportName
        case .abort: .abort
        case .list: .list
        case .startTLS: .startTLS
        case .info: .info
        case .go: .go
        case .structuredReply: .structuredReply
        case .listMetaContext: .listMetaContext
        case .setMetaContext: .setMetaContext
        case .extendedHeaders: .extendedHeaders
        case .unknown(let code): code
        case .malformed(let code, _): code
        }
    }
}

/// The data of NBD_OPT_INFO and NBD_OPT_GO: an export name and the information the client asks for.
public struct NBDInfoRequest: Sendable, Hashable {
    /// Export name; empty selects the default export.
    public var exportName: String
    /// `NBD_INFO_*` items requested; unknown ones are ignored, as proto.md requires.
    public var requests: [NBDInfoType]

    public init(exportName: String, requests: [NBDInfoType]) {
        self.exportName = exportName
        self.requests = requests
    }
}

/// The data of NBD_OPT_LIST_META_CONTEXT and NBD_OPT_SET_META_CONTEXT.
public struct NBDMetaContextRequest: Sendable, Hashable {
    /// The export the contexts are for.
    public var exportName: String
    /// Queries, each starting with a namespace and a colon; empty means "all" for LIST, "none" for SET.
    public var queries: [String]

    public init(exportName: String, queries: [String]) {
        self.exportName = exportName
        self.queries = queries
    }
}
