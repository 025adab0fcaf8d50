import CairnAPI
import CairnEngine
import ISCSIServer
import Logging
import NBDProtocol
import NBDServer
import ServiceLifecycle

extension Daemon {
    /// The iSCSI listener over the same catalog as NBD (VolumeISCSICatalog.swift), or nil when it is off.
    static func startISCSI(
        _ configuration: DaemonConfiguration, catalog: VolumeCatalog, logger: Logger
    ) async throws -> ISCSIServer? {
        guard let port = configuration.resolvedISCSIPort else { return nil }
        let host = configuration.iscsiHost ?? configuration.nbdHost
        let targets = VolumeISCSICatalog(volumes: catalog, servesPlaintext: configuration.tlsMode != .required)
        do {
            var settings = ISCSIServerConfiguration(host: host, port: port)
            settings.chap = configuration.iscsiChap
            return try await ISCSIServer.start(catalog: targets, configuration: settings, logger: logger)
        } catch {
            throw EngineError(.busy, "cannot listen for iSCSI on \(host):\(port): \(error) (--iscsi-listen, or --no-iscsi)")
        }
    }
}

/// Runs the iSCSI listener inside the service group: on the shutdown signal it stops accepting and closes
/// its sessions (commands already in the engine complete first).
struct ISCSIService: Service {
    let server: ISCSIServer

    func run() async throws {
        try? await gracefulShutdown()
        await server.close()
    }
}

/// What the pool status reports about open sessions, by protocol.
struct ProtocolSessions: Sendable {
    var nbdConnections: Int
    var iscsiAddress: String?
    var iscsi: [ISCSISessionDTO]

    init(nbd: NBDServer, iscsi: ISCSIServer?, iscsiAddress: String?) {
        nbdConnections = nbd.connectionCount
        self.iscsiAddress = iscsiAddress
        self.iscsi = (iscsi?.sessions ?? []).map {
            ISCSISessionDTO(
                id: $0.id, remoteAddress: $0.remoteAddress, initiator: $0.initiatorName, chapName: $0.chapName,
                target: $0.target)
        }
    }
}
