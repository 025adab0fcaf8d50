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
        let reservations = try restoreReservations(configuration, catalog: catalog, logger: logger)
        do {
            var settings = ISCSIServerConfiguration(host: host, port: port)
            settings.chap = configuration.iscsiChap
            return try await ISCSIServer.start(
                catalog: targets, configuration: settings, reservations: reservations, logger: logger)
        } catch {
            throw EngineError(.busy, "cannot listen for iSCSI on \(host):\(port): \(error) (--iscsi-listen, or --no-iscsi)")
        }
    }
}

extension Daemon {
    /// The reservations saved with APTPL before the last stop, less those of volumes that no longer exist
    /// (a volume id can be given again after a restart, and must not inherit them; the file is rewritten
    /// without them before any command runs).
    static func restoreReservations(
        _ configuration: DaemonConfiguration, catalog: VolumeCatalog, logger: Logger
    ) throws -> ISCSIReservationTable {
        let file = ISCSIReservationFile(path: ISCSIReservationFile.path(dataDirectory: configuration.dataDirectory))
        var saved = try file.load()
        let volumes = Set(catalog.pool.volumes.list().map(\.id))
        let stale = saved.keys.filter { !volumes.contains($0 >> VolumeLogicalUnit.volumeIDShift) }
        if !stale.isEmpty {
            for unit in stale { saved[unit] = nil }
            try file.save(saved)
            logger.info("dropped the saved iSCSI reservations of deleted volumes", metadata: ["units": "\(stale.count)"])
        }
        return ISCSIReservationTable(store: file, restored: saved, logger: logger)
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
