/// What a client's handshake agreed on: everything its transmission phase needs.
public struct NBDClientSession: Sendable, Hashable {
    /// The export entered, as the client named it.
    public var exportName: String
    /// Export size from NBD_INFO_EXPORT.
    public var size: UInt64
    /// Transmission flags from NBD_INFO_EXPORT.
    public var transmissionFlags: NBDTransmissionFlags
    /// NBD_INFO_BLOCK_SIZE, or the protocol defaults if the server sent none.
    public var blockSizes: NBDBlockSizeConstraints
    /// Contexts the server selected, with the ids its BLOCK_STATUS chunks carry.
    public var metaContexts: [NBDSelectedMetaContext]

    public init(
        exportName: String,
        size: UInt64,
        transmissionFlags: NBDTransmissionFlags,
        blockSizes: NBDBlockSizeConstraints,
        metaContexts: [NBDSelectedMetaContext]
    ) {
        self.exportName = exportName
        self.size = size
        self.transmissionFlags = transmissionFlags
        self.blockSizes = blockSizes
        self.metaContexts = metaContexts
    }

    /// The id the server gave context `name`, or nil if it was not selected.
    public func metaContextID(of name: String) -> UInt32? {
        metaContexts.first { $0.name == name }?.id
    }
}

/// Why a client's handshake failed.
public struct NBDNegotiationError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The option the server refused, with its error reply and message; nil for a protocol violation.
    public var refusedOption: NBDOptionCode?
    public var reply: NBDOptionReplyType?
    public var message: String

    public init(refusedOption: NBDOptionCode? = nil, reply: NBDOptionReplyType? = nil, _ message: String) {
        self.refusedOption = refusedOption
        self.reply = reply
        self.message = message
    }

    public var description: String {
        guard let refusedOption, let reply else { return message }
        return "\(refusedOption) refused with \(reply): \(message)"
    }
}
