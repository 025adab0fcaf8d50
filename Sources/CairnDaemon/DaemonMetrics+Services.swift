import CairnBackup
import CairnReplication
import Prometheus

/// The mirrors' and backups' series of `/metrics`, rendered from what the services report.
extension DaemonMetrics {
    func renderMirrors(_ mirrors: [MirrorInfo], _ scrape: inout Scrape) {
        let inSync = Self.name("mirror", "in_sync", nil, "1 while the mirror is mirrored (both sides equal)")
        let fractured = Self.name("mirror", "fractured", nil, "1 while the mirror is fractured or severed")
        let connected = Self.name("mirror", "connected", nil, "1 while a connection to the target is open")
        let lag = Self.name("mirror", "lag", "bytes", "Bytes of extents the target lacks (to resync)")
        let changed = Self.name("mirror", "changed_extents", nil, "Extents set in the change map")
        let fractures = Self.name("mirror", "fractures", "total", "Fractures since the daemon started")
        let retransmissions = Self.name("mirror", "retransmissions", "total", "Frames sent again")
        let replicated = Self.name("mirror", "replicated", "bytes_total", "Data bytes the target acknowledged")
        for mirror in mirrors {
            let owner = "mirror:" + mirror.volume
            let labels = [("volume", mirror.volume)]
            gauge(inSync, labels, owner, &scrape).set(mirror.state == "mirrored" ? 1.0 : 0.0)
            gauge(fractured, labels, owner, &scrape).set(mirror.state == "fractured" || mirror.state == "severed" ? 1.0 : 0.0)
            gauge(connected, labels, owner, &scrape).set(mirror.connected ? 1.0 : 0.0)
            gauge(lag, labels, owner, &scrape).set(Double(mirror.dirtyExtents * mirror.extentSize))
            gauge(changed, labels, owner, &scrape).set(Double(mirror.changedExtents))
            counter(fractures, labels, owner, total: mirror.fractures, &scrape)
            counter(retransmissions, labels, owner, total: mirror.retransmissions, &scrape)
            counter(replicated, labels, owner, total: mirror.bytesReplicated, &scrape)
        }
    }

    /// Every running backup and the last finished one of each volume, by backup id, and the backups that
    /// ended since the daemon started.
    func renderBackups(_ recent: [BackupMetricSample], finished: [String: Int], _ scrape: inout Scrape) {
        let ended = Self.name(nil, "backups", "total", "Backups that ended since the daemon started, by result")
        for result in ["succeeded", "failed"] {
            advance(
                registry.makeCounter(descriptor: ended, labels: [("result", result)]), key: "backups|" + result,
                to: UInt64(finished[result] ?? 0))
        }
        let phase = Self.name("backup", "phase", nil, "1 for the phase the backup is in (running, or the last of its volume)")
        let onA = Self.name("backup", "sessions_on_a", nil, "Sessions still on image A (open at the split, not yet closed)")
        let atSplit = Self.name("backup", "sessions_at_split", nil, "Sessions that were open at the split T")
        let archived = Self.name(
            "backup", "archived", "bytes", "Bytes of image A walked into the archive so far (the volume data carried, once finished)")
        let fileBytes = Self.name("backup", "archive_file", "bytes", "Size of the finished archive file")
        let duration = Self.name(
            "backup", "archive_duration", "seconds", "Time spent writing the archive (so far, while archiving), not the drain")
        let throughput = Self.name(
            "backup", "archive_throughput", "bytes_per_second", "Archived bytes over archive time (volume data carried, once finished)")
        for backup in recent {
            let owner = "backup:" + backup.id
            let labels = [("backup", backup.id), ("volume", backup.volume), ("method", backup.method)]
            for candidate in BackupRecord.Phase.allCases {
                gauge(phase, labels + [("phase", candidate.rawValue)], owner, &scrape)
                    .set(backup.phase == candidate ? 1.0 : 0.0)
            }
            gauge(onA, labels, owner, &scrape).set(Double(backup.sessionsOnA))
            gauge(atSplit, labels, owner, &scrape).set(Double(backup.sessionsAtSplit))
            gauge(archived, labels, owner, &scrape).set(Double(backup.archivedBytes))
            if let bytes = backup.archiveFileBytes { gauge(fileBytes, labels, owner, &scrape).set(Double(bytes)) }
            if let seconds = backup.archiveSeconds {
                gauge(duration, labels, owner, &scrape).set(seconds)
                if seconds > 0 {
                    gauge(throughput, labels, owner, &scrape).set(Double(backup.archivedBytes) / seconds)
                }
            }
        }
    }
}
