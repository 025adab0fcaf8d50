/// What the handshake may ask about exports without attaching to one. The server adapts its export
/// catalog to this so the handshake state machine stays free of I/O and easy to test.
public protocol NBDExportDirectory: Sendable {
    /// Exports to announce in answer to NBD_OPT_LIST.
    func listExports() -> [NBDExportSummary]
    /// Describes an export, or nil if there is none by that name (NBD_OPT_INFO, GO, meta contexts).
    func describeExport(named name: String) -> NBDExportDescription?
}

/// One line of NBD_OPT_LIST.
public struct NBDExportSummary: Sendable, Hashable {
    public var name: String
    public var description: String?
    /// Only offered after TLS when the server runs selective TLS.
    public var requiresTLS: Bool

    public init(name: String, description: String? = nil, requiresTLS: Bool = false) {
        self.name = name
        self.description = description
        self.requiresTLS = requiresTLS
    }
}

/// Everything the handshake tells a client about one export.
public struct NBDExportDescription: Sendable, Hashable {
    /// Canonical name (NBD_INFO_NAME).
    public var name: String
    /// NBD_INFO_DESCRIPTION, if any.
    public var description: String?
    /// Size in bytes.
    public var size: UInt64
    /// Transmission flags from the export's capabilities. `hasFlags` and `sendDF` are added by the
    /// handshake, which alone knows whether structured replies were negotiated.
    public var flags: NBDTransmissionFlags
    /// Advertised with NBD_INFO_BLOCK_SIZE and enforced on every request.
    public var blockSizes: NBDBlockSizeConstraints
    /// Metadata context names BLOCK_STATUS can answer for. A context's id is its position here plus one,
    /// so ids are stable for as long as this list is.
    public var metaContexts: [String]
    /// Only reachable after TLS when the server runs selective TLS.
    public var requiresTLS: Bool

    public init(
        name: String,
        description: String? = nil,
        size: UInt64,
        flags: NBDTransmissionFlags,
        blockSizes: NBDBlockSizeConstraints = .protocolDefault,
        metaContexts: [String] = [],
        requiresTLS: Bool = false
    ) {
        self.name = name
        self.description = description
        self.size = size
        self.flags = flags
        self.blockSizes = blockSizes
        self.metaContexts = metaContexts
        self.requiresTLS = requiresTLS
    }

    /// The server-chosen id of a context of this export, or nil if the export has no such context.
    public func metaContextID(of name: String) -> UInt32? {
        metaContexts.firstIndex(of: name).map { UInt32($0 + 1) }
    }
}
