import NBDProtocol

/// Why an `NBDClient` call failed.
public enum NBDClientError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The server answered the request with an error (and usually a message for people).
    case commandFailed(NBDCommandType, NBDWireError, message: String)
    /// The handshake failed: the server refused an option this client needs, or broke the protocol.
    case negotiationFailed(NBDNegotiationError)
    /// The server broke the protocol during transmission; the connection has been closed.
    case protocolViolation(String)
    /// The connection is closed (by `disconnect()`, by the server, or after an error).
    case connectionClosed
    /// The server did not advertise or negotiate what this call needs, so proto.md forbids sending it.
    case notNegotiated(String)
    /// The arguments break the export's size or block size constraints; nothing was sent.
    case invalidArgument(String)
    /// Not an `nbd://` URI this client understands.
    case invalidURI(String)

    public var description: String {
        switch self {
        case .commandFailed(let command, let error, let message):
            message.isEmpty ? "\(command) failed with \(error)" : "\(command) failed with \(error): \(message)"
        case .negotiationFailed(let error): "negotiation failed: \(error)"
        case .protocolViolation(let reason): "protocol violation by the server: \(reason)"
        case .connectionClosed: "the connection is closed"
        case .notNegotiated(let what): "not available on this connection: \(what)"
        case .invalidArgument(let reason): "invalid argument: \(reason)"
        case .invalidURI(let reason): "invalid NBD URI: \(reason)"
        }
    }
}
