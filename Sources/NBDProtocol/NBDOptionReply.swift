/// One reply to a client option (proto.md "Option reply types"); several may answer one option.
public enum NBDOptionReply: Sendable, Hashable {
    /// `NBD_REP_ACK`.
    case ack
    /// `NBD_REP_SERVER`: an export name, optionally followed by a human-readable description.
    case server(name: String, description: String?)
    /// `NBD_REP_INFO`.
    case info(NBDInfo)
    /// `NBD_REP_META_CONTEXT`: a context id (zero in LIST answers) and its name.
    case metaContext(id: UInt32, name: String)
    /// Any `NBD_REP_ERR_*`, with an optional message for the user.
    case error(NBDOptionReplyType, message: String?)

    /// The reply type on the wire.
    public var type: NBDOptionReplyType {
        switch self {
        case .ack: .ack
        case .server: .server
        case .info: .info
        case .metaContext: .metaContext
        case .error(let type, _): type
        }
    }
}

/// The payload of an `NBD_REP_INFO` reply.
public enum NBDInfo: Sendable, Hashable {
    /// `NBD_INFO_EXPORT`: size and transmission flags.
    case export(size: UInt64, flags: NBDTransmissionFlags)
    /// `NBD_INFO_NAME`: canonical name.
    case name(String)
    /// `NBD_INFO_DESCRIPTION`.
    case description(String)
    /// `NBD_INFO_BLOCK_SIZE`.
    case blockSize(NBDBlockSizeConstraints)
}

/// Block size constraints as advertised with NBD_INFO_BLOCK_SIZE (proto.md "Block size constraints").
public struct NBDBlockSizeConstraints: Sendable, Hashable {
    /// Smallest addressable unit: a power of two, at most 64 KiB.
    public var minimum: UInt32
    /// Size for efficient I/O: a power of two, at least max(minimum, 512).
    public var preferred: UInt32
    /// Largest payload of one READ or WRITE.
    public var maximumPayload: UInt32

    public init(minimum: UInt32, preferred: UInt32, maximumPayload: UInt32) {
        self.minimum = minimum
        self.preferred = preferred
        self.maximumPayload = maximumPayload
    }

    /// The defaults proto.md tells a server to support when nothing was advertised.
    public static let protocolDefault = NBDBlockSizeConstraints(
        minimum: 1,
        preferred: 4096,
        maximumPayload: UInt32(NBDLimits.maximumPayload)
    )
}
