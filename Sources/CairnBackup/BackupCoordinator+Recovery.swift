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
        for record in unfinished {
            let run = BackupRun(
                coordinator: self, record: record,
                volumeChunkSize: (try? pool.volumes.info(named: record.volume).chunkSize) ?? 65536, route: nil)
            // The phase decides (`BackupMachine`): abandon, archive again from frozen A, or drop A.
            run.drive(.reopened(at: Date()), reportsCancellation: false)
        }
        return unfinished.map(\.id)
    }

    /// The images of an interrupted backup, from the volumes it left in the pool.
    func reopenImages(_ record: BackupRecord) throws -> any MirrorImages {
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
    func mergeLog(_ record: BackupRecord) {
        do {
            try WriteLogImages.recover(
                pool: pool, volumeID: record.volumeID, size: record.volumeSize, logName: record.imageVolume,
                journalPath: store.journalPath(for: record.id))
        } catch {
            logger.error("cannot merge a backup's log", metadata: ["backup": "\(record.id)", "error": "\(error)"])
        }
    }
}
