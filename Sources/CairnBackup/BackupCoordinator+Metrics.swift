import CairnEngine
import Foundation

/// What `/metrics` reports of one backup: a running one, or the last finished one of its volume.
public struct BackupMetricSample: Sendable {
    public var id: String
    public var volume: String
    public var method: String
    public var phase: BackupRecord.Phase
    public var sessionsOnA: Int
    public var sessionsAtSplit: Int
    /// Bytes of image A walked into the archive so far (the volume data carried, once finished).
    public var archivedBytes: UInt64
    /// Size of the archive file, once finished.
    public var archiveFileBytes: UInt64?
    /// Time spent writing the archive (so far, while archiving).
    public var archiveSeconds: Double?
}

extension BackupCoordinator {
    /// The backups `/metrics` reports, and how many backups ended since the daemon started, by result
    /// ("succeeded", "failed"). Older finished backups stay in `cairn backup status`, not in metrics:
    /// one series per backup ever taken would grow without bound.
    public func metricSamples() -> (recent: [BackupMetricSample], finished: [String: Int]) {
        let (statuses, finished) = metricsSnapshot()
        let recent = Self.recentBackups(statuses).map { status in
            BackupMetricSample(
                id: status.record.id, volume: status.record.volume, method: status.record.method.rawValue,
                phase: status.record.phase, sessionsOnA: status.sessionsOnA.count,
                sessionsAtSplit: status.record.sessionsAtSplit ?? 0, archivedBytes: archivedBytes(status.record),
                archiveFileBytes: status.record.archiveBytes, archiveSeconds: archiveSeconds(status.record))
        }
        return (recent, finished)
    }

    /// Running backups, and the newest finished one of each volume.
    static func recentBackups(_ statuses: [BackupStatus]) -> [BackupStatus] {
        var lastFinished: [String: BackupStatus] = [:]
        var result: [BackupStatus] = []
        for status in statuses {
            if status.record.isFinished {
                lastFinished[status.record.volume] = status
            } else {
                result.append(status)
            }
        }
        return result + lastFinished.values.sorted { $0.record.startedAt < $1.record.startedAt }
    }

    /// Progress of the archive while it is written, the data it carries once done.
    private func archivedBytes(_ record: BackupRecord) -> UInt64 {
        if let bytes = record.dataBytes { return bytes }
        guard record.phase == .archiving, let job = record.jobID.flatMap({ pool.jobs.job($0) }) else { return 0 }
        return job.done
    }

    private func archiveSeconds(_ record: BackupRecord) -> Double? {
        if let seconds = record.archiveSeconds { return seconds }
        guard record.phase == .archiving, let started = record.archiveStartedAt else { return nil }
        return Date().timeIntervalSince(started)
    }
}
