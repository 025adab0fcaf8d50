/// What the frame parser yields, in the order the protocol phases allow.
public enum NBDClientMessage: Sendable {
    /// The 32-bit client flags that answer the greeting.
    case clientFlags(NBDClientFlags)
    /// One option of the handshake.
    case option(NBDOption)
    /// One transmission request.
    case request(NBDRequest)
}
