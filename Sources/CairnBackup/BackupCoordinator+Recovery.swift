import CairnEngine
import Foundation
import Logging

extension BackupCoordinator {
    /// Finishes what a crash interrupted, before any session is served (call before the NBD listener
    /// starts). A backup that was establishing or draining is abandoned: its A sessions were cut in
    /// the middle of their work, so A is not a consistent image; the images and the T snapshot are
    /// deleted (the log method first merges B's log into the volume, so no write B acknowledged is
    /// lost). A backup that was archiving had a frozen, durable A: its archive is written again from
    /// the start, then A is dropped as usual. Returns the ids of the backups it finished or abandoned.
    @discardableResult
    public func recover() -> [String] {
        let unfinished = list().map(\.record).filter { !$0.isFinished }
        for var record in unfinished {
            let run = BackupRun(
                coordinator: self, record: record,
                volumeChunkSize: (try? pool.volumes.info(named: record.volume).chunkSize) ?? 65536)
            if record.phase == .discarding {
                // The archive is complete and durable: only image A's storage is left to drop.
                if record.method == .log {
                    mergeLog(record)
                } else {
                    try? pool.volumes.delete(name: record.imageVolume, force: true)
                }
                run.dropOlderBases()
                run.record.phase = .succeeded
                run.record.finishedAt = Date()
                update(run.record)
                continue
            }
            guard record.phase == .archiving, let images = try? reopenImages(record) else {
                if record.method == .log { mergeLog(record) }
                run.fail(
                    EngineError(
                        .busy,
                        "the daemon stopped while the backup was \(record.phase.rawValue): the sessions on image A "
                            + "were cut in the middle of their work, so A is not a consistent image; the backup was "
                            + "abandoned (the volume has every acknowledged write); start a new one"),
                    images: nil, route: nil)
                continue
            }
            record.resumed = true
            run.record = record
            let jobID = pool.jobs.start(kind: "backup", target: record.volume, total: 0, unit: "bytes")
            run.record.jobID = jobID
            do {
                // The blocks A's sessions wrote were only in memory: an increment resumed after a crash
                // records the whole volume's range (holes as ZERO records), which is larger but exact.
                let everything = Set(0..<((record.volumeSize + RangeLockTable.blockSize - 1) / RangeLockTable.blockSize))
                try run.archive(images: images, writtenByA: record.baseArchiveID == nil ? [] : everything, jobID: jobID)
                run.record.phase = .discarding
                update(run.record)
                if record.method == .log { mergeLog(run.record) } else { try images.discardImages() }
                run.dropOlderBases()
                run.record.phase = .succeeded
                run.record.finishedAt = Date()
                run.record.message = "archive written again after a daemon restart"
                update(run.record)
                pool.jobs.finish(jobID, .succeeded, message: run.record.message)
            } catch {
                run.fail(error, images: images, route: nil)
                pool.jobs.finish(jobID, .failed, message: run.record.message)
            }
        }
        return unfinished.map(\.id)
    }

    /// The images of an interrupted backup, from the volumes it left in the pool.
    private func reopenImages(_ record: BackupRecord) throws -> any MirrorImages {
        let imageID = try pool.volumes.id(named: record.imageVolume)
        switch record.method {
        case .cow:
            return CopyOnWriteImages(pool: pool, volumeID: record.volumeID, cloneID: imageID, cloneName: record.imageVolume)
        case .mirror:
            let images = FullMirrorImages(
                pool: pool, volumeID: record.volumeID, copyID: imageID, copyName: record.imageVolume)
            images.broken = true
            return images
        case .log:
            // Image A is the volume itself, frozen since the drain; the log is merged after archiving.
            let journal = try LogTableJournal(path: store.journalPath(for: record.id), logger: logger)
            return WriteLogImages(
                pool: pool, volumeID: record.volumeID, size: record.volumeSize, logID: imageID,
                logName: record.imageVolume, journal: journal, entries: journal.entries)
        }
    }

    /// Copies B's log into the volume and deletes it (log method): what B acknowledged stays.
    private func mergeLog(_ record: BackupRecord) {
        do {
            try WriteLogImages.recover(
                pool: pool, volumeID: record.volumeID, size: record.volumeSize, logName: record.imageVolume,
                journalPath: store.journalPath(for: record.id))
        } catch {
            logger.error("cannot merge a backup's log", metadata: ["backup": "\(record.id)", "error": "\(error)"])
        }
    }
}
