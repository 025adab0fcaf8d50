import CairnBackup
import CairnEngine
import CairnIO
import CairnReplication
import NBDServer

/// The NBD export catalog over the pool: every volume is an export named after it, visible as soon as
/// it is created. Sessions attach to a volume by id, so a rename does not disturb them.
final class VolumeCatalog: NBDExportCatalog {
    let pool: Pool
    let executor: IOExecutor
    let batchers = CompletionBatchers()
    let metrics: DaemonMetrics
    /// nil: every session may open every export read-write.
    let access: ExportAccessPolicy?
    /// Volume name patterns reachable only over TLS (selective TLS).
    let tlsOnlyExports: [String]
    /// Remote mirrors: host writes to a mirrored volume go through its mirror; a mirror target is
    /// read-only to hosts while paired and not severed.
    let replication: Replication?
    /// Consistent backups: the catalog tells it which sessions each volume has (to split them at T).
    let backups: BackupCoordinator?

    init(
        pool: Pool, executor: IOExecutor, metrics: DaemonMetrics, access: ExportAccessPolicy? = nil,
        tlsOnlyExports: [String] = [], replication: Replication? = nil, backups: BackupCoordinator? = nil
    ) {
        self.replication = replication
        self.backups = backups
        self.pool = pool
        self.executor = executor
        self.metrics = metrics
        self.access = access
        self.tlsOnlyExports = tlsOnlyExports
    }

    /// True when `name` (`volume` or `volume@snapshot`) may be opened only after STARTTLS.
    func requiresTLS(_ name: String) -> Bool {
        let volume = Self.split(name).volume
        return tlsOnlyExports.contains { ExportAccessPolicy.Rule.pattern($0, matches: volume) }
    }

    /// What the access rules let `session` do with `name`; `.readWrite` without rules.
    func grant(_ name: String, _ session: NBDSessionInfo) -> ExportAccessPolicy.Grant? {
        access.map { $0.grant(export: name, session: session) } ?? .readWrite
    }

    func listExports(session: NBDSessionInfo) -> [NBDExportListing] {
        let volumes = pool.volumes.list().map {
            NBDExportListing(
                name: $0.name, description: VolumeExport.volumeDescription, requiresTLS: requiresTLS($0.name))
        }
        let snapshots = ((try? pool.snapshots.list()) ?? []).map {
            NBDExportListing(
                name: "\($0.volume)@\($0.name)", description: VolumeExport.snapshotDescription,
                requiresTLS: requiresTLS($0.volume))
        }
        return (volumes + snapshots).filter { grant($0.name, session) != nil }
    }

    /// "volume" or "volume@snapshot".
    static func split(_ name: String) -> (volume: String, snapshot: String?) {
        guard let at = name.firstIndex(of: "@") else { return (name, nil) }
        return (String(name[..<at]), String(name[name.index(after: at)...]))
    }

    func describe(name: String, session: NBDSessionInfo) -> (any NBDExport)? {
        guard let grant = grant(name, session) else { return nil }
        let export = describeVolume(name: name)
        return grant == .readOnly || isMirrorTarget(export) ? export?.grantedReadOnly() : export
    }

    private func describeVolume(name: String) -> VolumeExport? {
        let (volume, snapshot) = Self.split(name)
        guard let id = try? pool.volumes.id(named: volume) else { return nil }
        guard let snapshot else {
            return VolumeExport(
                pool: pool, executor: executor, batchers: batchers, metrics: metrics.export(name), volumeID: id,
                name: name, requiresTLS: requiresTLS(name), replication: replication)
        }
        guard let info = try? pool.snapshots.info(volume: volume, name: snapshot) else { return nil }
        return VolumeExport(
            pool: pool, executor: executor, batchers: batchers, metrics: metrics.export(name), volumeID: id, name: name,
            snapshotEpoch: info.epoch,
            snapshotSize: info.size, requiresTLS: requiresTLS(name))
    }

    func attach(name: String, session: NBDSessionInfo) throws -> any NBDExport {
        // Refused exactly like a name that does not exist: a client learns nothing about exports it
        // may not open.
        guard let grant = grant(name, session) else { throw NBDExportError(.invalid, "no export named '\(name)'") }
        let export = try attachVolume(name: name, session: session)
        return grant == .readOnly || isMirrorTarget(export) ? export.grantedReadOnly() : export
    }

    private func attachVolume(name: String, session: NBDSessionInfo) throws -> VolumeExport {
        let (volume, snapshot) = Self.split(name)
        do {
            if let snapshot {
                let pinned = try pool.snapshots.attach(volume: volume, name: snapshot)
                return VolumeExport(
                    pool: pool, executor: executor, batchers: batchers, metrics: metrics.export(name),
                    volumeID: pinned.volumeID, name: name,
                    snapshotEpoch: pinned.epoch, snapshotSize: pinned.size, requiresTLS: requiresTLS(name))
            }
            if backups?.isImageVolume(volume) == true {
                throw NBDExportError(.invalid, "'\(name)' holds a backup's image A and cannot be opened while it runs")
            }
            let id = try pool.volumes.id(named: volume)
            try pool.volumes.attach(volumeID: id)
            let routing = backups.map { coordinator -> BackupRouting in
                coordinator.sessionAttached(volumeID: id, session: session.id, address: session.remoteAddress)
                return BackupRouting(route: coordinator.route(volumeID: id), session: session.id)
            }
            return VolumeExport(
                pool: pool, executor: executor, batchers: batchers, metrics: metrics.export(name), volumeID: id,
                name: name, requiresTLS: requiresTLS(name), replication: replication, backupRoute: routing)
        } catch let error as NBDExportError {
            throw error
        } catch let error as EngineError where error.code == .notFound {
            throw NBDExportError(.invalid, "no export named '\(name)'")
        } catch {
            throw VolumeExport.wireError(error)
        }
    }

    /// A live volume paired as a mirror target (and not severed): hosts may only read it.
    private func isMirrorTarget(_ export: VolumeExport?) -> Bool {
        guard let export, export.snapshotEpoch == nil, let replication else { return false }
        return replication.target.isProtected(volumeID: export.volumeID)
    }

    func detach(_ export: any NBDExport, session: NBDSessionInfo) {
        guard let export = export as? VolumeExport else { return }
        if let epoch = export.snapshotEpoch {
            pool.snapshots.detach(volumeID: export.volumeID, epoch: epoch)
        } else {
            backups?.sessionDetached(volumeID: export.volumeID, session: session.id)
            pool.volumes.detach(volumeID: export.volumeID)
        }
    }
}
