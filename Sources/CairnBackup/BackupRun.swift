import CairnArchive
import CairnEngine
import Foundation
import Logging

/// One backup from split to archive, on its own thread: build the images and split at T, wait for A
/// to drain, freeze A and make it durable, write the archive, drop A.
final class BackupRun: @unchecked Sendable {
    // @unchecked: used by one thread at a time (the run's thread).
    let coordinator: BackupCoordinator
    var record: BackupRecord
    let chunkSize: UInt32
    var pool: Pool { coordinator.pool }
    /// How often a drain wait looks at cancellation.
    static let cancelPollNanoseconds: UInt64 = 200_000_000

    init(coordinator: BackupCoordinator, record: BackupRecord, volumeChunkSize: UInt32) {
        self.coordinator = coordinator
        self.record = record
        self.chunkSize = volumeChunkSize
    }

    func execute(splitDone: @escaping () -> Void) {
        var signalled = false
        let signal = {
            if !signalled {
                signalled = true
                splitDone()
            }
        }
        defer { signal() }
        let jobID = pool.jobs.start(kind: "backup", target: record.volume, total: 0, unit: "bytes")
        record.jobID = jobID
        coordinator.update(record)
        let route = coordinator.route(volumeID: record.volumeID)
        var images: (any MirrorImages)?
        do {
            let mirror = try split(route: route, jobID: jobID, images: &images, establishing: signal)
            signal()
            let outcome = try waitForDrain(mirror, jobID: jobID)
            let left = mirror.sessionsStillOnA
            route.hold { mirror.freeze() }
            // Image A is final: make it durable before saying so, so a crash from here on resumes.
            try pool.flush()
            record.drain = outcome.rawValue
            record.sessionsLeftOnA = left.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }
            record.phase = .archiving
            coordinator.update(record)
            guard !pool.jobs.isCancelled(jobID) else { throw EngineError(.busy, "the backup was cancelled") }
            try archive(images: mirror.images, writtenByA: mirror.blocksWrittenByA, jobID: jobID)
            try finish(images: mirror.images, route: route)
            pool.jobs.finish(jobID, .succeeded, message: "archived \(record.dataBytes ?? 0) bytes to \(record.archivePath)")
        } catch {
            fail(error, images: images, route: route)
            pool.jobs.finish(jobID, pool.jobs.isCancelled(jobID) ? .cancelled : .failed, message: record.message)
        }
    }

    /// Builds the images and splits the sessions at T.
    /// `establishing` is called once the mirror method's copy has started (the caller need not wait for it).
    private func split(
        route: VolumeRoute, jobID: UInt64, images: inout (any MirrorImages)?, establishing: () -> Void
    ) throws -> OneWayMirror {
        let volumeID = record.volumeID
        let mirror: OneWayMirror
        switch record.method {
        case .cow:
            // Commit what is dirty before the hold, so the commits inside it are small.
            try pool.flush()
            mirror = try route.hold { () -> OneWayMirror in
                try pool.snapshots.create(volume: record.volume, name: record.snapshot)
                let clone = try pool.volumes.clone(
                    volume: record.volume, snapshot: record.snapshot, as: record.imageVolume)
                let made = CopyOnWriteImages(
                    pool: pool, volumeID: volumeID, cloneID: clone.id, cloneName: record.imageVolume)
                images = made
                return splitNow(OneWayMirror(images: made, phase: .split), route: route)
            }
        case .log:
            let log = try pool.volumes.create(name: record.imageVolume, size: record.volumeSize, chunkSize: chunkSize)
            let journal = try LogTableJournal(path: coordinator.store.journalPath(for: record.id))
            let made = WriteLogImages(
                pool: pool, volumeID: volumeID, size: record.volumeSize, logID: log.id, logName: record.imageVolume,
                journal: journal)
            images = made
            try pool.flush()
            mirror = try route.hold { () -> OneWayMirror in
                try pool.snapshots.create(volume: record.volume, name: record.snapshot)
                return splitNow(OneWayMirror(images: made, phase: .split), route: route)
            }
        case .mirror:
            let copy = try pool.volumes.create(name: record.imageVolume, size: record.volumeSize, chunkSize: chunkSize)
            let made = FullMirrorImages(pool: pool, volumeID: volumeID, copyID: copy.id, copyName: record.imageVolume)
            images = made
            let building = OneWayMirror(images: made, phase: .establishing)
            route.hold { route.install(building) }
            coordinator.update(record, mirror: building)
            establishing()
            pool.jobs.progress(jobID, done: 0, total: record.volumeSize)
            try made.synchronize(locks: building.locks, size: record.volumeSize) {
                pool.jobs.progress(jobID, done: $0)
            }
            try pool.flush()
            mirror = try route.hold { () -> OneWayMirror in
                try pool.snapshots.create(volume: record.volume, name: record.snapshot)
                made.broken = true
                return splitNow(building, route: route)
            }
        }
        record.phase = .draining
        record.splitAt = Date()
        record.sessionsAtSplit = mirror.sessionsStillOnA.count
        coordinator.update(record, mirror: mirror)
        coordinator.logger.info(
            "backup split", metadata: ["backup": "\(record.id)", "method": "\(record.method.rawValue)",
                "sessions_on_a": "\(record.sessionsAtSplit ?? 0)"])
        return mirror
    }

    /// T: the sessions open now stay on A; the mirror becomes the volume's route. Inside the hold.
    private func splitNow(_ mirror: OneWayMirror, route: VolumeRoute) -> OneWayMirror {
        mirror.split(sessions: coordinator.sessions(of: record.volumeID))
        route.install(mirror)
        return mirror
    }

    private func waitForDrain(_ mirror: OneWayMirror, jobID: UInt64) throws -> OneWayMirror.DrainOutcome {
        let deadline = record.drainTimeoutSeconds.map { Date().addingTimeInterval($0) }
        while true {
            if let outcome = mirror.waitForDrain(timeoutNanoseconds: Self.cancelPollNanoseconds) { return outcome }
            if pool.jobs.isCancelled(jobID) { throw EngineError(.busy, "the backup was cancelled while draining") }
            if let deadline, deadline.timeIntervalSinceNow <= 0 { return mirror.expire() }
        }
    }

    /// Writes image A (frozen) to the archive: to `path.partial`, renamed when complete and durable.
    func archive(images: any MirrorImages, writtenByA: Set<UInt64>, jobID: UInt64) throws {
        var archiver = BackupArchiver(pool: pool, volumeID: images.imageAVolumeID, size: record.volumeSize)
        archiver.readDelayPerMiB = coordinator.archiveReadDelay
        let ranges: [Range<UInt64>]
        if let baseSnapshot = record.baseSnapshot {
            let base = try pool.snapshots.info(volume: record.volume, name: baseSnapshot)
            let now = try pool.snapshots.info(volume: record.volume, name: record.snapshot)
            let changed = try pool.snapshots.changedExtents(
                volumeID: record.volumeID, after: base.epoch, upTo: now.epoch, offset: 0, length: record.volumeSize,
                limit: .max
            ).map { $0.offset..<$0.offset + $0.length }
            let block = RangeLockTable.blockSize
            let written = writtenByA.map { $0 * block..<min(record.volumeSize, ($0 + 1) * block) }
            ranges = BackupArchiver.union([changed, written])
        } else {
            ranges = try archiver.allocatedRanges()
        }
        let total = ranges.reduce(0) { $0 + ($1.upperBound - $1.lowerBound) }
        pool.jobs.progress(jobID, done: 0, total: total)
        let streaming = Self.isFIFO(record.archivePath)
        let target = streaming ? record.archivePath : record.archivePath + ".partial"
        let header = ArchiveHeader(
            archiveID: record.id, kind: record.baseArchiveID == nil ? .full : .incremental,
            baseArchiveID: record.baseArchiveID, chainIndex: record.baseChainIndex.map { $0 + 1 } ?? 0,
            volume: record.volume, volumeSize: record.volumeSize, chunkSize: chunkSize, method: record.method.rawValue,
            splitAt: ISO8601DateFormatter().string(from: record.splitAt ?? record.startedAt),
            drain: record.drain ?? "drained", sessionsAtSplit: record.sessionsAtSplit ?? 0)
        let archiveStarted = Date()
        record.archiveStartedAt = archiveStarted
        coordinator.update(record)
        do {
            let writer = try ArchiveWriter(output: try FileArchiveOutput(path: target), header: header)
            try archiver.write(
                ranges: ranges, incremental: record.baseArchiveID != nil, to: writer,
                progress: { pool.jobs.progress(jobID, done: $0) }, shouldContinue: { !pool.jobs.isCancelled(jobID) })
            let summary = try writer.finish()
            if !streaming {
                guard rename(target, record.archivePath) == 0 else {
                    throw EngineError(.ioFailure, "cannot rename \(target) to \(record.archivePath)")
                }
                // Without it the archive's name may not survive a power cut: the backup must not
                // claim success over an error.
                try BackupRecordStore.syncDirectory((record.archivePath as NSString).deletingLastPathComponent)
            }
            record.dataBytes = summary.dataBytes
            record.archiveBytes = summary.archiveBytes
            record.archiveSeconds = Date().timeIntervalSince(archiveStarted)
        } catch let error as ArchiveError {
            if !streaming { unlink(target) }
            throw EngineError(.ioFailure, error.message)
        } catch {
            if !streaming { unlink(target) }
            throw error
        }
    }

    static func isFIFO(_ path: String) -> Bool {
        var status = stat()
        return stat(path, &status) == 0 && (status.st_mode & S_IFMT) == S_IFIFO
    }

    /// Drops image A: merges what must be merged, routes every session straight to the volume again,
    /// deletes A's storage, keeps the T snapshot as the next incremental base (older bases go).
    private func finish(images: any MirrorImages, route: VolumeRoute) throws {
        record.phase = .discarding
        coordinator.update(record)
        route.hold { images.prepareDissolve() }
        if let mirror = route.mirror { try images.dissolve(locks: mirror.locks) }
        try images.forgetTable()
        route.hold { route.install(nil) }
        try images.discardImages()
        dropOlderBases()
        record.phase = .succeeded
        record.finishedAt = Date()
        coordinator.update(record)
        coordinator.logger.info("backup archived", metadata: ["backup": "\(record.id)", "archive": "\(record.archivePath)"])
    }

    /// Keeps the snapshots of the volume's `BackupCoordinator.retainedBases` newest backups (this one
    /// included) as changed-block bases for `--since`; older ones are deleted, since each pins the data
    /// the volume has overwritten since it was taken.
    func dropOlderBases() {
        let snapshots = (try? pool.snapshots.list(volume: record.volume)) ?? []
        let bases = snapshots.filter { $0.name.hasPrefix(BackupCoordinator.namePrefix) && $0.name != record.snapshot }
            .sorted { $0.epoch > $1.epoch }
        for snapshot in bases.dropFirst(BackupCoordinator.retainedBases - 1) {
            _ = try? pool.snapshots.delete(volume: record.volume, name: snapshot.name)
        }
    }

    /// A failed (or abandoned) backup leaves nothing behind but its record: sessions go back to the
    /// volume, the images and the T snapshot are deleted, a partial archive is removed.
    func fail(_ error: any Error, images: (any MirrorImages)?, route: VolumeRoute?) {
        var keepImages = false
        if let route, let mirror = route.mirror {
            route.hold {
                mirror.freeze()
                images?.prepareDissolve()
            }
            do {
                try images?.dissolve(locks: mirror.locks)
                try images?.forgetTable()
                route.hold { route.install(nil) }
            } catch {
                // The log could not be merged: B still needs it, so the route and the images stay.
                keepImages = true
                coordinator.logger.error("cannot merge a failed backup's log", metadata: ["error": "\(error)"])
            }
        }
        if !keepImages {
            if let images { try? images.discardImages() }
            // Abandoned after a crash, the log method's log has been merged (or must be kept): only the
            // other methods' images are deleted blindly.
            if record.method != .log || images != nil, (try? pool.volumes.info(named: record.imageVolume)) != nil {
                try? pool.volumes.delete(name: record.imageVolume, force: true)
            }
            _ = try? pool.snapshots.delete(volume: record.volume, name: record.snapshot)
        }
        if !Self.isFIFO(record.archivePath) { unlink(record.archivePath + ".partial") }
        record.phase = .failed
        record.finishedAt = Date()
        record.message = (error as? EngineError)?.message ?? "\(error)"
        coordinator.update(record)
        coordinator.logger.error("backup failed", metadata: ["backup": "\(record.id)", "error": "\(record.message!)"])
    }
}
