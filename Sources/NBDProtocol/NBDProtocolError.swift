/// A violation of the wire protocol that leaves the byte stream unusable: the only answer is a hard
/// disconnect (proto.md: "Either side MAY initiate a hard disconnect if it detects a violation by the
/// other party of a mandatory condition").
public struct NBDProtocolError: Error, Sendable, Hashable, CustomStringConvertible {
    /// What went wrong, for tests and metrics.
    public enum Code: Sendable, Hashable {
        /// An option did not start with `IHAVEOPT`.
        case badOptionMagic
        /// A request did not start with the magic the negotiated header style requires.
        case badRequestMagic
        /// Option data longer than `NBDLimits.maximumOptionDataLength`.
        case optionTooLarge
        /// A payload longer than `NBDLimits.maximumDiscardedPayload`.
        case payloadTooLarge
        /// Bytes arrived while the protocol expected none (after ABORT or DISC, or before a TLS upgrade).
        case unexpectedData
        /// Client side: the server's greeting, an option reply or a reply did not start with its magic.
        case badReplyMagic
        /// Client side: a reply longer than the client buffers (`NBDServerFrameParser`).
        case replyTooLarge
        /// Client side: a reply whose contents contradict its type or the request it answers.
        case malformedReply
    }

    public var code: Code
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }
}
