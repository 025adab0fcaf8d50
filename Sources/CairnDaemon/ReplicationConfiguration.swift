import CairnReplication
import Foundation
import Logging
import NIOPosix

/// `cairn serve`'s remote-mirror settings.
public struct ReplicationConfiguration: Sendable {
    /// Address the replication listener binds to; nil: the NBD host.
    public var host: String?
    /// Port of the replication listener; nil: this daemon is not a target (it can still be a primary).
    public var port: Int?
    /// File holding the secret shared by the primary and target daemons.
    public var secretFile: String?
    /// Milliseconds a frame may go unanswered before it is sent again (see `ReplicationSettings`).
    public var frameTimeoutMilliseconds: UInt64 = 5000
    /// Retransmissions before the mirror fractures.
    public var retries: Int = 3
    /// Shell command run when a mirror fractures.
    public var alertCommand: String?
    /// Pause after each extent a resync copies, in milliseconds (a rate limit; 0: none).
    public var resyncExtentDelayMilliseconds: UInt64 = 0
    /// TLS on the replication link: this node's certificate and key, and the CA the peer's must chain to.
    public var tlsCertificate: String?
    public var tlsKey: String?
    public var tlsCA: String?

    public init() {}

    func settings() throws -> ReplicationSettings {
        let secret = try secretFile.map(ReplicationSecret.load)
        var settings = ReplicationSettings(
            secret: secret, node: ProcessInfo.processInfo.hostName, group: MultiThreadedEventLoopGroup.singleton)
        settings.frameTimeout = Double(frameTimeoutMilliseconds) / 1000
        settings.retries = retries
        settings.alertCommand = alertCommand
        settings.resyncExtentDelay = Double(resyncExtentDelayMilliseconds) / 1000
        if let certificate = tlsCertificate, let key = tlsKey, let ca = tlsCA {
            settings.tls = try ReplicationTLS.load(certificate: certificate, key: key, ca: ca)
        }
        return settings
    }
}

extension Daemon {
    /// Starts the replication layer: loads the mirror records, and with a replication port listens for
    /// primaries. Returns the listener (nil without a port).
    static func startReplication(
        _ replication: Replication, configuration: DaemonConfiguration, settings: ReplicationSettings, logger: Logger
    ) async throws -> MirrorTargetServer? {
        guard let port = configuration.replication.port else { return nil }
        guard let secret = settings.secret else {
            throw EngineErrorBridge.configuration(
                "a replication listener needs a shared secret (--replication-secret-file): no unauthenticated host may write to a target")
        }
        let host = configuration.replication.host ?? configuration.nbdHost
        do {
            let server = try await MirrorTargetServer.start(
                host: host, port: port, service: replication.target, secret: secret, group: settings.group, logger: logger,
                tls: settings.tls)
            logger.info(
                "replication listener",
                metadata: ["address": "\(host):\(server.port)", "tls": "\(settings.tls == nil ? "off" : "mutual")"])
            return server
        } catch {
            throw EngineErrorBridge.configuration("cannot listen for replication on \(host):\(port): \(error)")
        }
    }
}

/// Start-up failures of the replication layer, reported like the daemon's other start-up errors.
enum EngineErrorBridge {
    static func configuration(_ message: String) -> any Error {
        ReplicationError(.notConfigured, message)
    }
}
