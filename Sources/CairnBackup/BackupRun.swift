import CairnArchive
import CairnEngine
import Foundation
import Logging

/// One backup from split to archive, on its own thread: build the images and split at T, wait for A
/// to drain, freeze A and make it durable, write the archive, drop A. `BackupMachine` decides each step
/// and every change of the record; the run carries out its actions (`perform`) and reports what they
/// did as the next event. The coordinator's recovery drives a run the same way after a restart.
final class BackupRun: @unchecked Sendable {
    // @unchecked: used by one thread at a time (the run's thread).
    let coordinator: BackupCoordinator
    private(set) var machine: BackupMachine
    var record: BackupRecord { machine.record }
    let chunkSize: UInt32
    var pool: Pool { coordinator.pool }
    /// The volume's route while sessions are served; nil when recovering at open (no session yet).
    let route: VolumeRoute?
    /// Images A and B, once built (or found again after a restart).
    private var images: (any MirrorImages)?
    /// The one-way mirror, once installed.
    private var mirror: OneWayMirror?
    /// Called once the split happened (or failed), or the mirror method's copy started.
    private var splitDone: () -> Void = {}
    /// How often a drain wait looks at cancellation.
    static let cancelPollNanoseconds: UInt64 = 200_000_000

    init(coordinator: BackupCoordinator, record: BackupRecord, volumeChunkSize: UInt32, route: VolumeRoute?) {
        self.coordinator = coordinator
        self.machine = BackupMachine(record: record)
        self.chunkSize = volumeChunkSize
        self.route = route
    }

    func execute(splitDone: @escaping () -> Void) {
        var signalled = false
        self.splitDone = {
            if !signalled {
                signalled = true
                splitDone()
            }
        }
        defer { self.splitDone() }
        let jobID = pool.jobs.start(kind: "backup", target: record.volume, total: 0, unit: "bytes")
        drive(.started(jobID: jobID), reportsCancellation: true)
    }

    /// Feeds `event` and carries out what follows until the backup waits for nothing more; an error on
    /// the way fails the backup (cancelled when its job was and `reportsCancellation`).
    func drive(_ event: BackupMachine.Event, reportsCancellation: Bool) {
        do {
            try feed(event)
        } catch {
            let message = (error as? EngineError)?.message ?? "\(error)"
            let cancelled = reportsCancellation && record.jobID.map { pool.jobs.isCancelled($0) } == true
            do {
                try feed(cancelled ? .cancelled(message: message, at: Date()) : .failed(message: message, at: Date()))
            } catch {
                coordinator.logger.error(
                    "backup refused its failure", metadata: ["backup": "\(record.id)", "error": "\(error)"])
            }
        }
        switch record.phase {
        case .succeeded:
            coordinator.logger.info(
                "backup archived", metadata: ["backup": "\(record.id)", "archive": "\(record.archivePath)"])
        case .failed:
            coordinator.logger.error(
                "backup failed", metadata: ["backup": "\(record.id)", "error": "\(record.message ?? "")"])
        default:
            break
        }
    }

    /// Hands `first` to the machine and performs its actions in order; the events they report are fed
    /// in turn. The first error stops the rest.
    private func feed(_ first: BackupMachine.Event) throws {
        var events = [first]
        while !events.isEmpty {
            for action in try machine.handle(events.removeFirst()) {
                if let next = try perform(action) { events.append(next) }
            }
        }
    }

    /// Carries out one action; returns the event that reports its outcome, if it has one.
    private func perform(_ action: BackupMachine.Action) throws -> BackupMachine.Event? {
        switch action {
        case .persist:
            coordinator.update(record, mirror: mirror)
            return nil
        case .split:
            return try split()
        case .awaitDrain:
            return try awaitDrain()
        case .archive:
            return try archive()
        case .dropImageA:
            try dropImageA()
            return .discarded(at: Date())
        case .dropImageStorage:
            if record.method == .log {
                coordinator.mergeLog(record)
            } else {
                try? pool.volumes.delete(name: record.imageVolume, force: true)
            }
            return nil
        case .dropOlderBases:
            dropOlderBases()
            return nil
        case .mergeLog:
            coordinator.mergeLog(record)
            return nil
        case .discardLeftovers:
            discardLeftovers()
            return nil
        case .reopenImages:
            guard let found = try? coordinator.reopenImages(record) else { return .imagesLost(at: Date()) }
            images = found
            let jobID = pool.jobs.start(kind: "backup", target: record.volume, total: 0, unit: "bytes")
            return .imagesReopened(jobID: jobID)
        case .finishJob(let outcome, let message):
            if let jobID = record.jobID { pool.jobs.finish(jobID, outcome, message: message) }
            return nil
        }
    }

    /// Builds the images and splits the sessions at T. With the mirror method, `splitDone` is called once
    /// the copy has started (the caller need not wait for it).
    private func split() throws -> BackupMachine.Event {
        guard let route, let jobID = record.jobID else {
            throw EngineError(.busy, "a backup splits only in a live run")
        }
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
            // Not a phase change: `status` shows the sessions on the mirror being built.
            self.mirror = building
            coordinator.update(record, mirror: building)
            splitDone()
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
        self.mirror = mirror
        let sessionsOnA = mirror.sessionsStillOnA.count
        coordinator.logger.info(
            "backup split", metadata: ["backup": "\(record.id)", "method": "\(record.method.rawValue)",
                "sessions_on_a": "\(sessionsOnA)"])
        return .split(at: Date(), sessionsOnA: sessionsOnA)
    }

    /// T: the sessions open now stay on A; the mirror becomes the volume's route. Inside the hold.
    private func splitNow(_ mirror: OneWayMirror, route: VolumeRoute) -> OneWayMirror {
        mirror.split(sessions: coordinator.sessions(of: record.volumeID))
        route.install(mirror)
        return mirror
    }

    /// Waits for A to drain (or be sealed, or time out), freezes it and makes it durable.
    private func awaitDrain() throws -> BackupMachine.Event {
        guard let route, let mirror, let jobID = record.jobID else {
            throw EngineError(.busy, "only a live run waits for its sessions")
        }
        // The split is recorded: `start` may answer with T and the sessions on A.
        splitDone()
        let outcome = try waitForDrain(mirror, jobID: jobID)
        let left = mirror.sessionsStillOnA
        route.hold { mirror.freeze() }
        // Image A is final: make it durable before saying so, so a crash from here on resumes.
        try pool.flush()
        let leftOnA = left.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }
        return .frozen(drain: outcome.rawValue, sessionsLeftOnA: leftOnA)
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
    private func archive() throws -> BackupMachine.Event {
        guard let images, let jobID = record.jobID else { throw EngineError(.busy, "there is no image A to archive") }
        guard !pool.jobs.isCancelled(jobID) else { throw EngineError(.busy, "the backup was cancelled") }
        // The blocks A's sessions wrote are known to a live run only (they were in memory): an increment
        // resumed after a crash records the whole volume's range (holes as ZERO records), larger but exact.
        let block = RangeLockTable.blockSize
        let writtenByA = mirror?.blocksWrittenByA ?? Set(0..<((record.volumeSize + block - 1) / block))
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
        try feed(.archiveStarted(at: archiveStarted))
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
            return .archived(
                dataBytes: summary.dataBytes, archiveBytes: summary.archiveBytes,
                seconds: Date().timeIntervalSince(archiveStarted))
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

    /// Drops image A. A live run merges what must be merged, routes every session straight to the volume
    /// again and deletes A's storage; a resumed archive (no session was served yet) merges the log or
    /// deletes the images. The T snapshot stays as the next incremental base.
    private func dropImageA() throws {
        guard let images else { throw EngineError(.busy, "there is no image A to drop") }
        guard let route else {
            if record.method == .log { coordinator.mergeLog(record) } else { try images.discardImages() }
            return
        }
        route.hold { images.prepareDissolve() }
        if let mirror = route.mirror { try images.dissolve(locks: mirror.locks) }
        try images.forgetTable()
        route.hold { route.install(nil) }
        try images.discardImages()
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
    private func discardLeftovers() {
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
    }
}
