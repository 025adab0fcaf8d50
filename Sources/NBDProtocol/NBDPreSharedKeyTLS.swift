/// What both ends of NBD over TLS with pre-shared keys agree on. BoringSSL (under swift-nio-ssl) has PSK
/// for TLS 1.2 only; GnuTLS clients (qemu, libnbd) offer these suites next to TLS 1.3 and settle on them.
public enum NBDPreSharedKeyTLS {
    /// Cipher suites, strongest first: ECDHE for forward secrecy (BoringSSL has no DHE-PSK), then plain
    /// PSK for peers limited to it.
    public static let cipherSuites =
        "ECDHE-PSK-CHACHA20-POLY1305:ECDHE-PSK-AES256-CBC-SHA:ECDHE-PSK-AES128-CBC-SHA:PSK-AES256-CBC-SHA:PSK-AES128-CBC-SHA"
}
