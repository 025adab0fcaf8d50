import Foundation
import NBDProtocol
import NIOCore
import NIOSSL

/// The server side of NBD_OPT_STARTTLS, with one of two kinds of credentials:
///
/// - X.509: a certificate chain and key (PEM), and optionally the CA that client certificates must chain
///   to (then a client without a valid certificate is refused; its subject is its identity).
/// - Pre-shared keys: a GnuTLS `psktool` key file (`username:hexkey` per line), what qemu's
///   `tls-creds-psk` and libnbd's `tls-psk-file=` read. The username is the client's identity.
///   BoringSSL implements PSK for TLS 1.2 only, so PSK sessions are TLS 1.2 with ECDHE-PSK suites
///   (forward secret); GnuTLS clients offer those next to TLS 1.3 and settle on them.
public struct NBDServerTLS: Sendable {
    enum Credentials: Sendable {
        case certificate(NIOSSLContext)
        case preSharedKeys(NBDPreSharedKeys)
    }

    let credentials: Credentials
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
            return NBDServerTLS(
                credentials: .certificate(try NIOSSLContext(configuration: configuration)),
                verifiesClients: clientCA != nil)
        } catch {
            throw NBDServerConfigurationError(description: "the TLS certificate and key do not work together: \(error)")
        }
    }

    /// Loads a `psktool` key file. Every session is then TLS-PSK; its identity is the username.
    public static func loadPreSharedKeys(_ path: String) throws -> NBDServerTLS {
        let keys = try NBDPreSharedKeys(contentsOf: path)
        let tls = NBDServerTLS(credentials: .preSharedKeys(keys), verifiesClients: true)
        _ = try tls.preSharedKeyContext(keys, identity: NBDPSKIdentity())  // fail at start-up, not per client
        return tls
    }

    /// A TLS handler for one connection; `identity` receives the PSK username the client proved.
    func makeHandler(identity: NBDPSKIdentity) throws -> NIOSSLServerHandler {
        switch credentials {
        case .certificate(let context):
            return NIOSSLServerHandler(context: context)
        case .preSharedKeys(let keys):
            // A context per connection: the key callback has no other way to say which connection the
            // username it sees belongs to. A PSK context loads no certificate, so it is cheap to make.
            return NIOSSLServerHandler(context: try preSharedKeyContext(keys, identity: identity))
        }
    }

    private func preSharedKeyContext(_ keys: NBDPreSharedKeys, identity: NBDPSKIdentity) throws -> NIOSSLContext {
        var configuration = TLSConfiguration.makePreSharedKeyConfiguration()
        configuration.minimumTLSVersion = .tlsv12
        configuration.maximumTLSVersion = .tlsv12
        configuration.cipherSuites = NBDPreSharedKeyTLS.cipherSuites
        configuration.pskServerProvider = { context in
            guard let key = keys.key(for: context.clientIdentity), key.count <= context.maxPSKLength else {
                throw NBDServerConfigurationError(description: "unknown PSK identity")
            }
            identity.username = context.clientIdentity
            var secure = NIOSSLSecureBytes()
            secure.append(contentsOf: key)
            return PSKServerIdentityResponse(key: secure)
        }
        do {
            return try NIOSSLContext(configuration: configuration)
        } catch {
            throw NBDServerConfigurationError(description: "cannot set up TLS with pre-shared keys: \(error)")
        }
    }
}

/// The PSK username a connection's client proved, written by the TLS key callback during the handshake
/// and read when it completes. Both run on the connection's event loop.
final class NBDPSKIdentity: @unchecked Sendable {
    var username: String?
}

/// A GnuTLS `psktool` key file: `username:hexkey` lines.
struct NBDPreSharedKeys: Sendable {
    /// 128 bits: anything shorter is guessable offline from one recorded handshake. psktool makes 256.
    static let minimumKeyBytes = 16
    /// TLS carries identities of at most 2^16-1 bytes; psktool's usernames are short words.
    static let maximumUsernameBytes = 255

    private let keys: [String: [UInt8]]

    func key(for username: String) -> [UInt8]? { keys[username] }

    init(contentsOf path: String) throws {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw NBDServerConfigurationError(description: "cannot read the PSK file \(path)")
        }
        var keys: [String: [UInt8]] = [:]
        for (index, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("#") { continue }
            let place = "\(path) line \(index + 1)"
            guard let colon = line.lastIndex(of: ":") else {
                throw NBDServerConfigurationError(description: "\(place): expected username:hexkey")
            }
            let username = String(line[..<colon])
            guard !username.isEmpty, username.utf8.count <= Self.maximumUsernameBytes,
                username.unicodeScalars.allSatisfy({ $0.value >= 0x20 && $0.value != 0x7f })
            else {
                throw NBDServerConfigurationError(
                    description: "\(place): a username is 1...\(Self.maximumUsernameBytes) printable bytes")
            }
            guard let key = NBDHex.decode(line[line.index(after: colon)...]), key.count >= Self.minimumKeyBytes else {
                throw NBDServerConfigurationError(
                    description: "\(place): the key must be hexadecimal, at least \(Self.minimumKeyBytes) bytes "
                        + "(psktool -u NAME -p FILE makes one)")
            }
            guard keys[username] == nil else {
                throw NBDServerConfigurationError(description: "\(place): '\(username)' has a key already")
            }
            keys[username] = key
        }
        guard !keys.isEmpty else { throw NBDServerConfigurationError(description: "\(path) holds no key") }
        self.keys = keys
    }
}
