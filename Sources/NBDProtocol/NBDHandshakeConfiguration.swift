/// How the server treats TLS (proto.md "Server-side requirements"). The mode must not change during a
/// connection.
public enum NBDTLSMode: Sendable, Hashable {
    /// NOTLS: NBD_OPT_STARTTLS is answered with NBD_REP_ERR_UNSUP.
    case disabled
    /// SELECTIVETLS: the client may upgrade; exports marked `requiresTLS` are refused until it does.
    case selective
    /// FORCEDTLS: every option but STARTTLS and ABORT is refused with NBD_REP_ERR_TLS_REQD until TLS is up.
    case required
}

/// Knobs of the handshake state machine.
public struct NBDHandshakeConfiguration: Sendable, Hashable {
    /// TLS policy. Anything but `.disabled` needs a transport that can run the upgrade.
    public var tlsMode: NBDTLSMode
    /// Whether NBD_OPT_EXTENDED_HEADERS is accepted (it is answered NBD_REP_ERR_UNSUP otherwise).
    public var allowsExtendedHeaders: Bool
    /// Options accepted before the server hangs up (a denial-of-service guard).
    public var maximumOptionCount: Int

    public init(
        tlsMode: NBDTLSMode = .disabled,
        allowsExtendedHeaders: Bool = true,
        maximumOptionCount: Int = NBDLimits.maximumOptionCount
    ) {
        self.tlsMode = tlsMode
        self.allowsExtendedHeaders = allowsExtendedHeaders
        self.maximumOptionCount = maximumOptionCount
    }
}
