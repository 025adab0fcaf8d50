import CairnDaemon
import Foundation

extension ServeCommand {
    /// Remote-mirror settings, the file's `replication:` section under the flags, checked (every value
    /// refused with a sentence before the daemon starts).
    func applyReplicationFlags(file: ServeConfigFile.Replication?, to daemon: inout DaemonConfiguration) throws {
        let replicationPort = self.replicationPort ?? file?.port
        let replicationHost = self.replicationHost ?? file?.host
        let replicationSecretFile = self.replicationSecretFile ?? file?.secretFile
        let mirrorTimeoutMs = self.mirrorTimeoutMs ?? file?.timeoutMs
        let mirrorRetries = self.mirrorRetries ?? file?.retries
        let mirrorAlertCommand = self.mirrorAlertCommand ?? file?.alertCommand
        // The three TLS files go together: flags replace the file's as a set.
        let flagTLS = [self.replicationTlsCert, self.replicationTlsKey, self.replicationTlsCa]
        let fromFlags = flagTLS.contains { $0 != nil }
        let replicationTlsCert = fromFlags ? self.replicationTlsCert : file?.tlsCert
        let replicationTlsKey = fromFlags ? self.replicationTlsKey : file?.tlsKey
        let replicationTlsCa = fromFlags ? self.replicationTlsCa : file?.tlsCA
        if let port = replicationPort {
            guard (0...65535).contains(port) else { throw ConfigError("the replication port must be 0...65535") }
            guard replicationSecretFile != nil else {
                throw ConfigError(
                    "--replication-port needs --replication-secret-file: a target accepts only primaries that hold the secret")
            }
        }
        if let path = replicationSecretFile, !FileManager.default.isReadableFile(atPath: path) {
            throw ConfigError("cannot read the replication secret file \(path)")
        }
        if let timeout = mirrorTimeoutMs, !(50...600_000).contains(timeout) {
            throw ConfigError("--mirror-timeout-ms must be 50...600000")
        }
        if let retries = mirrorRetries, !(0...100).contains(retries) {
            throw ConfigError("--mirror-retries must be 0...100")
        }
        let tls = [replicationTlsCert, replicationTlsKey, replicationTlsCa]
        if tls.contains(where: { $0 != nil }) && tls.contains(where: { $0 == nil }) {
            throw ConfigError(
                "replication TLS needs all three of --replication-tls-cert, --replication-tls-key and --replication-tls-ca")
        }
        for path in tls.compactMap({ $0 }) where !FileManager.default.isReadableFile(atPath: path) {
            throw ConfigError("cannot read \(path)")
        }
        daemon.replication.tlsCertificate = replicationTlsCert
        daemon.replication.tlsKey = replicationTlsKey
        daemon.replication.tlsCA = replicationTlsCa
        daemon.replication.port = replicationPort
        daemon.replication.host = replicationHost
        daemon.replication.secretFile = replicationSecretFile
        daemon.replication.frameTimeoutMilliseconds = mirrorTimeoutMs ?? daemon.replication.frameTimeoutMilliseconds
        daemon.replication.retries = mirrorRetries ?? daemon.replication.retries
        daemon.replication.alertCommand = mirrorAlertCommand
        daemon.replication.resyncExtentDelayMilliseconds = mirrorResyncDelayMs ?? 0
    }

    /// One line for `--check-config`.
    static func describeReplication(_ daemon: DaemonConfiguration) -> String {
        let r = daemon.replication
        let listener = r.port.map { "target on \(r.host ?? daemon.nbdHost):\($0)" } ?? "no listener"
        let secret = r.secretFile.map { "secret \($0)" } ?? "no secret (mirroring off)"
        let tls = r.tlsCertificate == nil ? "no TLS" : "mutual TLS"
        return "\(listener), \(secret), \(tls), timeout \(r.frameTimeoutMilliseconds) ms × \(r.retries + 1) tries"
    }
}
