import CairnEngine
import Foundation

extension BackupCoordinator {
    /// Prometheus text for the backups of this pool (appended to GET /metrics): every running backup and
    /// the last finished one of each volume, by backup id, plus counters of the backups that ended since
    /// the daemon started. Older finished backups stay in `cairn backup status`, not here: one series per
    /// backup ever taken would grow without bound.
    public func prometheusText() -> String {
        let (statuses, finished) = metricsSnapshot()
        var lines: [String] = []
        func family(_ name: String, _ type: String, _ help: String) {
            lines.append("# HELP \(name) \(help)")
            lines.append("# TYPE \(name) \(type)")
        }
        func labels(_ record: BackupRecord, _ extra: [(String, String)] = []) -> String {
            let pairs = [("backup", record.id), ("volume", record.volume), ("method", record.method.rawValue)] + extra
            return "{" + pairs.map { "\($0.0)=\"\(Self.escapeLabel($0.1))\"" }.joined(separator: ",") + "}"
        }
        family("cairn_backups_total", "counter", "Backups that ended since the daemon started, by result")
        for result in ["succeeded", "failed"] {
            lines.append("cairn_backups_total{result=\"\(result)\"} \(finished[result] ?? 0)")
        }
        let recent = Self.recentBackups(statuses)
        guard !recent.isEmpty else { return lines.joined(separator: "\n") + "\n" }
        let phases: [BackupRecord.Phase] = [.establishing, .draining, .archiving, .discarding, .succeeded, .failed]
        family("cairn_backup_phase", "gauge", "1 for the phase the backup is in (running, or the last of its volume)")
        for status in recent {
            for phase in phases {
                lines.append(
                    "cairn_backup_phase\(labels(status.record, [("phase", phase.rawValue)])) "
                        + (status.record.phase == phase ? "1" : "0"))
            }
        }
        family("cairn_backup_sessions_on_a", "gauge", "Sessions still on image A (open at the split, not yet closed)")
        for status in recent { lines.append("cairn_backup_sessions_on_a\(labels(status.record)) \(status.sessionsOnA.count)") }
        family("cairn_backup_sessions_at_split", "gauge", "Sessions that were open at the split T")
        for status in recent {
            lines.append("cairn_backup_sessions_at_split\(labels(status.record)) \(status.record.sessionsAtSplit ?? 0)")
        }
        family(
            "cairn_backup_archived_bytes", "gauge",
            "Bytes of image A walked into the archive so far (the volume data carried, once finished)")
        for status in recent { lines.append("cairn_backup_archived_bytes\(labels(status.record)) \(archivedBytes(status.record))") }
        family("cairn_backup_archive_file_bytes", "gauge", "Size of the finished archive file")
        for status in recent where status.record.archiveBytes != nil {
            lines.append("cairn_backup_archive_file_bytes\(labels(status.record)) \(status.record.archiveBytes!)")
        }
        family(
            "cairn_backup_archive_duration_seconds", "gauge",
            "Time spent writing the archive (so far, while archiving), not the drain")
        for status in recent {
            if let seconds = archiveSeconds(status.record) {
                lines.append("cairn_backup_archive_duration_seconds\(labels(status.record)) \(seconds)")
            }
        }
        family(
            "cairn_backup_archive_throughput_bytes_per_second", "gauge",
            "Archived bytes over archive time (volume data carried, once finished)")
        for status in recent {
            if let seconds = archiveSeconds(status.record), seconds > 0 {
                let rate = Double(archivedBytes(status.record)) / seconds
                lines.append("cairn_backup_archive_throughput_bytes_per_second\(labels(status.record)) \(rate)")
            }
        }
        return lines.joined(separator: "\n") + "\n"
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

    /// Prometheus label values escape backslash, double quote and newline.
    static func escapeLabel(_ value: String) -> String {
        value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
            .replacingOccurrences(of: "\n", with: "\\n")
    }
}
