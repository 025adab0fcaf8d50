import CairnIO
import Foundation
import Logging

/// A snapshot as management commands show it.
public struct SnapshotInfo: Sendable, Hashable {
    public var volume: String
    public var name: String
    /// The epoch it reads at; stable for its lifetime.
    public var epoch: UInt32
    /// Volume size when the snapshot was taken.
    public var size: UInt64
    public var createdAt: Int64
    /// Sessions reading it (NBD exports `volume@name`).
    public var attachments: Int
    /// Clones made from it (they keep it alive).
    public var clones: [String]
    /// How long taking it took; only in the answer to `SnapshotCatalog.create`.
    public var creation: SnapshotCreationTiming? = nil
}

/// Where the time of a snapshot creation went. Writes are held back only for `writesPaused` (the epoch
/// barrier: waiting for writes in flight, then switching the epoch); the rest is the metadata commit
/// of the cut, during which host I/O runs on.
public struct SnapshotCreationTiming: Sendable, Hashable {
    public var writesPaused: Duration
    public var total: Duration
}

/// `pool.snapshots`: taking, listing, deleting and rolling back to snapshots, the sessions that read
/// them, the ranges changed between two epochs (`+Changes`) and allocation status (`+BlockStatus`,
/// NBD block status). Owns no state of its own: snapshot records live in each `VolumeState`, under the
/// pool mutex.
///
/// Core calls it uses: `monitor` and `state`, `checkWritable()`, `flush()`, `withEpochBarrier`,
/// `commitCut` (a snapshot's own commit), the clone groups' `refuse(_:of:)` and
/// `cloneGroupRoutesReads`; and `pool.reclaim` after a deletion.
public final class SnapshotCatalog: Sendable {
    unowned let pool: Pool

    init(pool: Pool) { self.pool = pool }

    /// Snapshots per volume. Creation and copy-on-write do not slow down with more (a write consults
    /// only the newest snapshot), but reclaim and listing walk the list; a few hundred is plenty for
    /// scheduled snapshots, and the bound keeps a runaway script from making them slow.
    public static let maximumSnapshotsPerVolume = 1024

    /// Takes a snapshot of a volume: every write acknowledged before this call is in it, none that
    /// starts after it returns. O(1) in the size of the volume.
    ///
    /// Writes pause only while the ones in flight finish and the epoch changes; then one metadata
    /// commit (a journal frame: the snapshot and the volume's new epoch, no data sync) makes the
    /// snapshot durable before this returns. It is not a FLUSH of the volume: writes acknowledged before
    /// the cut that no FLUSH covered yet are in the snapshot, and become durable in it with the next
    /// group commit, as they do in the volume. After a power cut the snapshot exists and holds the
    /// writes from before its cut that were durable: what the volume itself would have held had the
    /// power gone at the cut. A host that wants every write in it, durably, flushes first (as fsfreeze
    /// or a guest agent does before a backup snapshot).
    @discardableResult
    public func create(volume name: String, name snapshotName: String) throws -> SnapshotInfo {
        try NameRules.validate(snapshotName, what: "snapshot")
        let clock = ContinuousClock()
        let started = clock.now
        var paused = Duration.zero
        let (taken, record, volumeRecord) = try pool.monitor.withLock {
            () -> (SnapshotInfo, SnapshotRecord, VolumeRecord) in
            try pool.checkWritable()
            let volume = try pool.state.volume(named: name)
            guard !volume.snapshots.contains(where: { $0.name == snapshotName }) else {
                throw EngineError(.alreadyExists, "snapshot '\(name)@\(snapshotName)' already exists")
            }
            guard volume.snapshots.count < Self.maximumSnapshotsPerVolume else {
                throw EngineError(
                    .invalidArgument,
                    "volume '\(name)' has \(Self.maximumSnapshotsPerVolume) snapshots, the maximum; delete some first")
            }
            guard volume.epoch < UInt32.max - 1 else {
                throw EngineError(.invalidArgument, "volume '\(name)' has used up its snapshot epochs")
            }
            let barrierStarted = clock.now
            defer { paused = clock.now - barrierStarted }
            let record = try pool.withEpochBarrier(volume) {
                // Checked again: the barrier may have waited for another snapshot of the same name.
                guard !volume.snapshots.contains(where: { $0.name == snapshotName }) else {
                    throw EngineError(.alreadyExists, "snapshot '\(name)@\(snapshotName)' already exists")
                }
                let record = SnapshotRecord(
                    volumeID: volume.id, name: snapshotName, epoch: volume.epoch, size: volume.record.size,
                    createdAt: Pool.now())
                volume.snapshots.append(record)
                volume.record.epoch += 1
                return record
            }
            // Also in the next group commit, with the versions written before the cut.
            pool.state.dirty.snapshots.append(record)
            pool.state.dirty.volumes.insert(volume.id)
            return (snapshotInfo(volume, record), record, volume.record)
        }
        pool.monitor.broadcast()
        try pool.commitCut(snapshot: record, volume: volumeRecord)
        var info = taken
        info.creation = SnapshotCreationTiming(writesPaused: paused, total: clock.now - started)
        pool.logger.info(
            "snapshot created",
            metadata: [
                "snapshot": "\(name)@\(snapshotName)", "epoch": "\(info.epoch)",
                "paused_us": "\(paused.microseconds)", "total_us": "\(info.creation!.total.microseconds)",
            ])
        return info
    }

    /// Snapshots of one volume (or of every volume), oldest first.
    public func list(volume name: String? = nil) throws -> [SnapshotInfo] {
        try pool.monitor.withLock {
            let volumes = try name.map { [try pool.state.volume(named: $0)] } ?? pool.state.volumes.values.sorted {
                $0.record.name < $1.record.name
            }
            return volumes.flatMap { volume in
                volume.snapshots.filter { !volume.deletingSnapshots.contains($0.name) }.map { snapshotInfo(volume, $0) }
            }
        }
    }

    public func info(volume name: String, name snapshotName: String) throws -> SnapshotInfo {
        try pool.monitor.withLock {
            let volume = try pool.state.volume(named: name)
            return snapshotInfo(volume, try volume.snapshot(named: snapshotName))
        }
    }

    /// Deletes a snapshot. Refused while clones depend on it or sessions read it. The snapshot is gone
    /// (durably) when this returns; the space only it held is reclaimed by a background job whose id is
    /// returned.
    @discardableResult
    public func delete(volume name: String, name snapshotName: String) throws -> UInt64 {
        let volumeID = try pool.monitor.withLock { () -> UInt64 in
            try pool.checkWritable()
            let volume = try pool.state.volume(named: name)
            let snapshot = try volume.snapshot(named: snapshotName)
            let clones = self.clones(of: volume, epoch: snapshot.epoch)
            guard clones.isEmpty else {
                throw EngineError(
                    .busy,
                    "snapshot '\(name)@\(snapshotName)' has clone(s) \(clones.joined(separator: ", ")); delete them first")
            }
            let readers = volume.snapshotAttachments[snapshotName] ?? 0
            guard readers == 0 else {
                throw EngineError(
                    .busy, "snapshot '\(name)@\(snapshotName)' is exported to \(readers) session(s); disconnect them first")
            }
            // Hidden from now on, but it keeps protecting its versions until its deletion is durable:
            // otherwise a write could change in place a version that a crash would bring back.
            volume.deletingSnapshots.insert(snapshotName)
            pool.state.dirty.deletedSnapshots.append((volume.id, snapshotName))
            return volume.id
        }
        try pool.flush()
        pool.monitor.withLock {
            guard let volume = pool.state.volumes[volumeID] else { return }
            volume.snapshots.removeAll { $0.name == snapshotName }
            volume.deletingSnapshots.remove(snapshotName)
        }
        pool.monitor.broadcast()
        pool.logger.info("snapshot deleted", metadata: ["snapshot": "\(name)@\(snapshotName)"])
        return pool.reclaim.start(volumeID: volumeID, target: "\(name)@\(snapshotName)")
    }

    /// Returns a volume to the content of one of its snapshots. Snapshots newer than it would no longer
    /// fit in the volume's history and are destroyed, so that needs `force`; so does a volume with
    /// sessions attached (they see their disk change under them).
    public func rollback(volume name: String, to snapshotName: String, force: Bool = false) throws {
        let volumeID = try pool.monitor.withLock { () -> UInt64 in
            try pool.checkWritable()
            let volume = try pool.state.volume(named: name)
            try pool.cloneGroups.refuse(.rollback, of: volume.id)
            let target = try volume.snapshot(named: snapshotName)
            let newer = volume.snapshots.filter { $0.epoch > target.epoch }
            if !newer.isEmpty && !force {
                throw EngineError(
                    .wouldLoseData,
                    "rolling '\(name)' back to '\(snapshotName)' destroys the newer snapshot(s) "
                        + "\(newer.map(\.name).joined(separator: ", ")); use --force to do it")
            }
            for snapshot in newer {
                let clones = self.clones(of: volume, epoch: snapshot.epoch)
                if !clones.isEmpty {
                    throw EngineError(
                        .busy, "snapshot '\(name)@\(snapshot.name)' has clone(s) \(clones.joined(separator: ", "))")
                }
                if (volume.snapshotAttachments[snapshot.name] ?? 0) > 0 {
                    throw EngineError(.busy, "snapshot '\(name)@\(snapshot.name)' is exported; disconnect its sessions")
                }
            }
            if volume.attachments > 0 && !force {
                throw EngineError(
                    .busy,
                    "volume '\(name)' is exported to \(volume.attachments) session(s); their disk would change under "
                        + "them. Disconnect them or use --force")
            }
            // Stop all I/O on the volume: no read may see a half-rolled-back map.
            while volume.epochChangePending || volume.readsBlocked { pool.monitor.wait() }
            volume.epochChangePending = true
            volume.readsBlocked = true
            while volume.writesInFlight > 0 || !volume.locks.isEmpty { pool.monitor.wait() }
            for chunk in volume.present.chunks(in: 0..<UInt64.max) {
                var versions = volume.map[chunk]!.versions
                while let last = versions.last, last.birth > target.epoch {
                    pool.state.release(last.slot)
                    versions.removeLast()
                }
                volume.setVersions(chunk, versions.isEmpty ? nil : VersionList(versions))
                pool.state.markDirty(volume.id, chunk)
            }
            for snapshot in newer {
                pool.state.dirty.deletedSnapshots.append((volume.id, snapshot.name))
                volume.snapshotAttachments[snapshot.name] = nil
            }
            volume.snapshots.removeAll { $0.epoch > target.epoch }
            volume.record.size = target.size
            pool.state.dirty.volumes.insert(volume.id)
            volume.epochChangePending = false
            volume.readsBlocked = false
            return volume.id
        }
        pool.monitor.broadcast()
        try pool.flush()
        _ = volumeID
        pool.logger.info("volume rolled back", metadata: ["volume": "\(name)", "snapshot": "\(snapshotName)"])
    }

    /// Returns the volume id, the snapshot epoch and its size.
    public func attach(volume name: String, name snapshotName: String) throws
        -> (volumeID: UInt64, epoch: UInt32, size: UInt64)
    {
        try pool.monitor.withLock {
            let volume = try pool.state.volume(named: name)
            let snapshot = try volume.snapshot(named: snapshotName)
            volume.snapshotAttachments[snapshotName, default: 0] += 1
            return (volume.id, snapshot.epoch, snapshot.size)
        }
    }

    /// Names and epochs of a volume's snapshots, oldest first (cheap: for NBD meta context lists).
    public func epochs(volumeID: UInt64) -> [(name: String, epoch: UInt32)] {
        pool.monitor.withLock {
            guard let volume = pool.state.volumes[volumeID] else { return [] }
            return volume.snapshots.filter { !volume.deletingSnapshots.contains($0.name) }.map { ($0.name, $0.epoch) }
        }
    }

    public func detach(volumeID: UInt64, epoch: UInt32) {
        pool.monitor.withLock {
            guard let volume = pool.state.volumes[volumeID],
                let snapshot = volume.snapshots.first(where: { $0.epoch == epoch })
            else { return }
            let remaining = (volume.snapshotAttachments[snapshot.name] ?? 1) - 1
            volume.snapshotAttachments[snapshot.name] = remaining > 0 ? remaining : nil
        }
    }

    // MARK: - Helpers (monitor held)

    func snapshotInfo(_ volume: VolumeState, _ record: SnapshotRecord) -> SnapshotInfo {
        SnapshotInfo(
            volume: volume.record.name, name: record.name, epoch: record.epoch, size: record.size,
            createdAt: record.createdAt, attachments: volume.snapshotAttachments[record.name] ?? 0,
            clones: clones(of: volume, epoch: record.epoch))
    }

    /// Names of the clones made from `volume` at `epoch`.
    func clones(of volume: VolumeState, epoch: UInt32) -> [String] {
        pool.state.volumes.values.filter { $0.record.parent == ParentLink(volumeID: volume.id, epoch: epoch) }
            .map(\.record.name).sorted()
    }
}
