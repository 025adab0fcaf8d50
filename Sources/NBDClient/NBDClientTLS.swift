import Foundation
import NBDProtocol
import NIOCore
import NIOSSL

/// Credentials for NBD over TLS from the client side, laid out the way qemu and libnbd take them:
///
/// - X.509: a directory with `ca-cert.pem` (the CA the server's certificate must chain to) and,
///   optionally, `client-cert.pem` + `client-key.pem` (libnbd's `tls-certificates=DIR`, qemu's
///   `tls-creds-x509,dir=DIR`). The server's certificate must name the host (or its IP address).
/// - Pre-shared key: a psktool file and the username to use from it (libnbd's `tls-psk-file=` with
///   `nbds://USER@...`, qemu's `tls-creds-psk`). TLS 1.2 with ECDHE-PSK, as Cairn's server offers.
public struct NBDClientTLS: Sendable {
    let context: NIOSSLContext
    /// The name the server's certificate must carry (SNI too); nil for an IP address, which is then
    /// checked against the certificate's IP addresses.
    let serverHostname: String?

    /// X.509 credentials from `directory` (see above) for a server at `host`.
    public static func certificates(directory: String, host: String) throws(NBDClientError) -> NBDClientTLS {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.minimumTLSVersion = .tlsv12
        do {
            configuration.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(directory + "/ca-cert.pem"))
        } catch {
            throw .invalidArgument("cannot load the CA certificate \(directory)/ca-cert.pem: \(error)")
        }
        let certificate = directory + "/client-cert.pem"
        let key = directory + "/client-key.pem"
        if FileManager.default.fileExists(atPath: certificate) {
            do {
                configuration.certificateChain = try NIOSSLCertificate.fromPEMFile(certificate).map { .certificate($0) }
                configuration.privateKey = .privateKey(try NIOSSLPrivateKey(file: key, format: .pem))
            } catch {
                throw .invalidArgument("cannot load the client certificate and key in \(directory): \(error)")
            }
        }
        return try make(configuration, host: host)
    }

    /// A pre-shared key for `username` from a psktool file.
    public static func preSharedKey(username: String, keyFile: String, host: String) throws(NBDClientError)
        -> NBDClientTLS
    {
        guard let text = try? String(contentsOfFile: keyFile, encoding: .utf8) else {
            throw .invalidArgument("cannot read the PSK file \(keyFile)")
        }
        let line = text.split(separator: "\n").first { $0.hasPrefix(username + ":") }
        guard let line, let key = NBDHex.decode(line.dropFirst(username.count + 1).trimmingCharacters(in: .whitespaces)) else {
            throw .invalidArgument("\(keyFile) has no hexadecimal key for '\(username)'")
        }
        var configuration = TLSConfiguration.makePreSharedKeyConfiguration()
        configuration.minimumTLSVersion = .tlsv12
        configuration.maximumTLSVersion = .tlsv12
        configuration.cipherSuites = NBDPreSharedKeyTLS.cipherSuites
        configuration.pskClientProvider = { _ in
            var secure = NIOSSLSecureBytes()
            secure.append(contentsOf: key)
            return PSKClientIdentityResponse(key: secure, identity: username)
        }
        return try make(configuration, host: host)
    }

    private static func make(_ configuration: TLSConfiguration, host: String) throws(NBDClientError) -> NBDClientTLS {
        do {
            let isAddress = host.contains(":") || host.split(separator: ".").allSatisfy { UInt8($0) != nil }
            return NBDClientTLS(
                context: try NIOSSLContext(configuration: configuration), serverHostname: isAddress ? nil : host)
        } catch {
            throw .invalidArgument("cannot set up TLS: \(error)")
        }
    }

    func makeHandler() throws -> NIOSSLClientHandler {
        try NIOSSLClientHandler(context: context, serverHostname: serverHostname)
    }
}
