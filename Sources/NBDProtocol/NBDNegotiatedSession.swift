/// What the handshake agreed on, handed to the transmission phase.
public struct NBDNegotiatedSession: Sendable, Hashable {
    /// The export entered, as described when the client attached.
    public var export: NBDExportDescription
    /// Transmission flags exactly as sent to the client.
    public var transmissionFlags: NBDTransmissionFlags
    /// Reply framing.
    public var replyStyle: NBDReplyStyle
    /// Metadata contexts BLOCK_STATUS answers for, in id order.
    public var metaContexts: [NBDSelectedMetaContext]

    public init(
        export: NBDExportDescription,
        transmissionFlags: NBDTransmissionFlags,
        replyStyle: NBDReplyStyle,
        metaContexts: [NBDSelectedMetaContext]
    ) {
        self.export = export
        self.transmissionFlags = transmissionFlags
        self.replyStyle = replyStyle
        self.metaContexts = metaContexts
    }

    /// True if requests use the 32-byte header.
    public var extendedHeaders: Bool { replyStyle == .extended }
}

/// A metadata context chosen with NBD_OPT_SET_META_CONTEXT.
public struct NBDSelectedMetaContext: Sendable, Hashable {
    /// Server-chosen id sent in NBD_REP_META_CONTEXT and in every block status chunk.
    public var id: UInt32
    public var name: String

    public init(id: UInt32, name: String) {
        self.id = id
        self.name = name
    }
}
