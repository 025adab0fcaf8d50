import NIOCore
import NIOSSL

/// The server side of NBD_OPT_STARTTLS: an X.509 certificate chain and key (PEM), and optionally the CA
/// that client certificates must chain to (then a client without a valid certificate is refused).
///
/// Pre-shared keys: swift-nio-ssl (BoringSSL) supports TLS 1.2 PSK, but GnuTLS-based clients (qemu,
/// libnbd) negotiate TLS 1.3 PSK with GnuTLS's own identity format; this server offers X.509 only.
public struct NBDServerTLS: Sendable {
    let context: NIOSSLContext
    /// True when client certificates are checked against a CA (required, or checked when presented).
    public let verifiesClients: Bool

    /// Loads the PEM files; the error names the file that could not be used. With `clientCA`, a client
    /// certificate must chain to it; `requireClientCertificate: false` also admits clients without one
    /// (they have no identity for access rules).
    public static func load(
        certificateChain: String, privateKey: String, clientCA: String? = nil, requireClientCertificate: Bool = true
    ) throws -> NBDServerTLS {
        let chain: [NIOSSLCertificate]
        let key: NIOSSLPrivateKey
        do { chain = try NIOSSLCertificate.fromPEMFile(certificateChain) } catch {
            throw NBDServerConfigurationError(description: "cannot load the TLS certificate \(certificateChain): \(error)")
        }
        do { key = try NIOSSLPrivateKey(file: privateKey, format: .pem) } catch {
            throw NBDServerConfigurationError(description: "cannot load the TLS private key \(privateKey): \(error)")
        }
        guard !chain.isEmpty else {
            throw NBDServerConfigurationError(description: "\(certificateChain) holds no certificate")
        }
        var configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
        configuration.minimumTLSVersion = .tlsv12
        if let clientCA {
            do {
                configuration.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(clientCA))
            } catch {
                throw NBDServerConfigurationError(description: "cannot load the client CA \(clientCA): \(error)")
            }
            // Client certificates carry no host name to check: the chain to the CA is the identity.
            configuration.certificateVerification =
                requireClientCertificate ? .noHostnameVerification : .optionalVerification
        }
        do {
            return NBDServerTLS(context: try NIOSSLContext(configuration: configuration), verifiesClients: clientCA != nil)
        } catch {
            throw NBDServerConfigurationError(description: "the TLS certificate and key do not work together: \(error)")
        }
    }
}
