import NIOCore
import NIOSSL

/// TLS on the replication link (swift-nio-ssl), mutual: each daemon presents its node certificate and
/// checks the peer's against the CA. A target with TLS accepts only primaries whose certificate chains to
/// the CA (and then the shared secret on top); a primary accepts only a target whose certificate chains to
/// the CA and names the host it dialled (or its IP address).
///
/// One certificate per node serves both roles, so it must allow both uses (no extendedKeyUsage, or
/// `serverAuth,clientAuth`).
public struct ReplicationTLS: Sendable {
    let server: NIOSSLContext
    let client: NIOSSLContext

    public static func load(certificate: String, key: String, ca: String) throws -> ReplicationTLS {
        let chain: [NIOSSLCertificate]
        let privateKey: NIOSSLPrivateKey
        let roots: [NIOSSLCertificate]
        do { chain = try NIOSSLCertificate.fromPEMFile(certificate) } catch {
            throw ReplicationError(.invalidArgument, "cannot load the replication TLS certificate \(certificate): \(error)")
        }
        do { privateKey = try NIOSSLPrivateKey(file: key, format: .pem) } catch {
            throw ReplicationError(.invalidArgument, "cannot load the replication TLS key \(key): \(error)")
        }
        do { roots = try NIOSSLCertificate.fromPEMFile(ca) } catch {
            throw ReplicationError(.invalidArgument, "cannot load the replication TLS CA \(ca): \(error)")
        }
        guard !chain.isEmpty, !roots.isEmpty else {
            throw ReplicationError(.invalidArgument, "the replication TLS certificate and CA files must hold certificates")
        }
        var server = TLSConfiguration.makeServerConfiguration(
            certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(privateKey))
        server.minimumTLSVersion = .tlsv12
        server.trustRoots = .certificates(roots)
        // A primary's certificate names no host the target could check: the chain to the CA is its identity.
        server.certificateVerification = .noHostnameVerification
        var client = TLSConfiguration.makeClientConfiguration()
        client.minimumTLSVersion = .tlsv12
        client.certificateChain = chain.map { .certificate($0) }
        client.privateKey = .privateKey(privateKey)
        client.trustRoots = .certificates(roots)
        client.certificateVerification = .fullVerification
        do {
            return ReplicationTLS(
                server: try NIOSSLContext(configuration: server), client: try NIOSSLContext(configuration: client))
        } catch {
            throw ReplicationError(.invalidArgument, "the replication TLS certificate and key do not work together: \(error)")
        }
    }

    /// The handler a primary puts first on its connection to `host`. An IP address cannot be sent as SNI;
    /// the certificate is then checked against the peer's address.
    func clientHandler(host: String) throws -> NIOSSLClientHandler {
        let isAddress = (try? SocketAddress(ipAddress: host, port: 0)) != nil
        return try NIOSSLClientHandler(context: client, serverHostname: isAddress ? nil : host)
    }
}
