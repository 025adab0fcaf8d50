import CairnDaemon
import Foundation
import ISCSIProtocol

extension ServeCommand {
    /// `--iscsi-listen` / `--no-iscsi` over the file's `iscsi: {listen: HOST:PORT, enabled: BOOL}`.
    func applyISCSI(file: ServeConfigFile.ISCSI?, to daemon: inout DaemonConfiguration) throws {
        if let chap = file?.chap { daemon.iscsiChap = try Self.chapConfiguration(chap) }
        if noIscsi || (iscsiListen == nil && file?.enabled == false) {
            daemon.iscsiPort = nil
            return
        }
        guard let listen = iscsiListen ?? file?.listen else { return }
        let (host, port) = try Self.parseListen(listen)
        daemon.iscsiHost = host
        daemon.iscsiPort = port
        daemon.iscsiPortExplicit = true
    }

    /// "PORT", "HOST:PORT" or "[IPv6]:PORT".
    static func parseListen(_ text: String) throws -> (host: String?, port: Int) {
        func port(_ s: Substring) throws -> Int {
            guard let n = Int(s), (0...65535).contains(n) else {
                throw ConfigError("the iSCSI listen address '\(text)' needs a port 0...65535 (HOST:PORT)")
            }
            return n
        }
        if let n = Int(text) { return (nil, try port(Substring(String(n)))) }
        guard let colon = text.lastIndex(of: ":") else {
            throw ConfigError("the iSCSI listen address '\(text)' is not HOST:PORT")
        }
        var host = text[..<colon]
        if host.hasPrefix("["), host.hasSuffix("]") { host = host.dropFirst().dropLast() }
        guard !host.isEmpty else { throw ConfigError("the iSCSI listen address '\(text)' has an empty host") }
        return (String(host), try port(text[text.index(after: colon)...]))
    }

    /// RFC 7143 §12.1.3: CHAP secrets of at least 12 bytes (96 bits), and a target secret that is no
    /// initiator's secret (else a reflected challenge would authenticate).
    static let minimumChapSecretLength = 12

    /// The file's `chap:` section, checked: every user has a secret of at least 12 bytes, names are unique.
    static func chapConfiguration(_ chap: ServeConfigFile.Chap) throws -> ISCSIChapConfiguration {
        func secret(_ credential: ServeConfigFile.ChapCredential, _ role: String) throws -> String {
            var text: String
            switch (credential.secret, credential.secretFile) {
            case (let secret?, nil): text = secret
            case (nil, let path?):
                guard let contents = try? String(contentsOfFile: path, encoding: .utf8) else {
                    throw ConfigError("cannot read the CHAP secret file '\(path)' of \(role) '\(credential.name)'")
                }
                text = contents
                while text.hasSuffix("\n") || text.hasSuffix("\r") { text.removeLast() }
            default:
                throw ConfigError("CHAP \(role) '\(credential.name)' needs exactly one of secret or secret_file")
            }
            guard text.utf8.count >= minimumChapSecretLength, text.utf8.count <= 255 else {
                throw ConfigError(
                    "the CHAP secret of \(role) '\(credential.name)' must be \(minimumChapSecretLength) to 255 bytes")
            }
            guard !credential.name.isEmpty, !credential.name.contains("\0") else {
                throw ConfigError("a CHAP \(role) needs a non-empty name")
            }
            return text
        }
        var secrets: [String: String] = [:]
        for user in chap.users ?? [] {
            guard secrets[user.name] == nil else { throw ConfigError("CHAP user '\(user.name)' is listed twice") }
            secrets[user.name] = try secret(user, "user")
        }
        var target: (name: String, secret: String)?
        if let credential = chap.target {
            let text = try secret(credential, "target")
            guard !secrets.values.contains(text) else {
                throw ConfigError("the CHAP target secret must differ from every user's secret")
            }
            target = (credential.name, text)
        }
        if chap.required == true && secrets.isEmpty {
            throw ConfigError("iscsi.chap.required needs at least one CHAP user")
        }
        return ISCSIChapConfiguration(initiatorSecrets: secrets, target: target, required: chap.required ?? false)
    }
}
