import CairnAPI
import CairnControl
import CairnEngine
import CairnReplication
import Foundation

extension PoolManagement {
    func listSnapshots(volume: String?) async throws -> [SnapshotDTO] {
        try await run { try pool.snapshots.list(volume: volume) }.map(dto)
    }

    func snapshot(volume: String, name: String) async throws -> SnapshotDTO {
        dto(try await run { try pool.snapshots.info(volume: volume, name: name) })
    }

    func createSnapshot(volume: String, name: String) async throws -> SnapshotDTO {
        dto(try await run { try pool.snapshots.create(volume: volume, name: name) })
    }

    func deleteSnapshot(volume: String, name: String) async throws -> SnapshotDeletionDTO {
        let job = try await run { try pool.snapshots.delete(volume: volume, name: name) }
        return SnapshotDeletionDTO(deleted: "\(volume)@\(name)", job: pool.jobs.job(job).map(Self.dto))
    }

    func rollback(volume: String, snapshot: String, force: Bool) async throws -> VolumeDTO {
        try refuseIfMirrored(volume, "rolled back")
        try refuseIfBackingUp(volume, "rolled back")
        return dto(
            try await run {
                try pool.snapshots.rollback(volume: volume, to: snapshot, force: force)
                return try pool.volumes.info(named: volume)
            })
    }

    func clone(volume: String, snapshot: String, as name: String) async throws -> VolumeDTO {
        dto(try await run { try pool.volumes.clone(volume: volume, snapshot: snapshot, as: name) })
    }

    func changes(volume: String, from: String, to: String?) async throws -> ChangesDTO {
        let extents = try await run { try pool.snapshots.changedExtents(volume: volume, from: from, to: to) }
        return ChangesDTO(
            volume: volume, from: from, to: to, changedBytes: extents.reduce(0) { $0 + $1.length },
            extents: extents.map { ChangesDTO.Extent(offset: $0.offset, length: $0.length) })
    }

    func startDedup(volumes: [String]) async throws -> JobDTO {
        let id = try await run { try pool.dedup.start(volumes: volumes.isEmpty ? nil : volumes) }
        return try await job(id: id)
    }

    func startScrub() async throws -> JobDTO {
        let id = try await run { try pool.scrub.start() }
        return try await job(id: id)
    }

    func scrubReport() async throws -> ScrubReportDTO {
        guard let report = pool.scrub.lastReport else {
            throw ManagementError(code: "not_found", message: "no scrub has run since the daemon started; start one with `cairn pool scrub`")
        }
        return ScrubReportDTO(
            job: report.job, finished: report.finished, verifiedBytes: report.verifiedBytes,
            uncheckedBytes: report.uncheckedBytes,
            damage: report.damage.map {
                ScrubReportDTO.Damage(
                    volume: $0.volume, offset: $0.offset, length: $0.length, live: $0.live, snapshots: $0.snapshots,
                    slot: "\($0.slot)")
            })
    }

    func repairScrubDamage() async throws -> ScrubRepairDTO {
        guard let report = pool.scrub.lastReport, report.finished else {
            throw ManagementError(code: "not_found", message: "no finished scrub to repair from; run `cairn pool scrub --wait`")
        }
        var blocks: [ScrubRepairDTO.Block] = []
        for damage in report.damage {
            var block = ScrubRepairDTO.Block(
                volume: damage.volume, offset: damage.offset, length: damage.length, repaired: false, detail: nil)
            if !damage.live {
                block.detail = "only snapshots read it: a mirror holds the live data only"
            } else if let replication {
                do {
                    if try await replication.repairFromTarget(volume: damage.volume, offset: damage.offset, length: damage.length) {
                        // Read it back: the repair counts only if the block now verifies.
                        let id = try await run { try pool.volumes.id(named: damage.volume) }
                        _ = try await run {
                            var bytes = [UInt8](repeating: 0, count: Int(damage.length))
                            return try bytes.withUnsafeMutableBytes { try pool.read(volumeID: id, offset: damage.offset, into: $0) }
                        }
                        block.repaired = true
                    } else {
                        block.detail = "no mirror in the mirrored state with this range in sync"
                    }
                } catch {
                    block.detail = "\(error)"
                }
            } else {
                block.detail = "replication is not configured on this daemon"
            }
            blocks.append(block)
        }
        return ScrubRepairDTO(blocks: blocks)
    }

    func listStores() async throws -> [StoreDTO] {
        pool.stores.list().map { StoreDTO(name: $0.name, path: $0.path) }
    }

    func addStore(_ store: StoreDTO) async throws -> StoreDTO {
        try await run { try pool.stores.add(name: store.name, path: store.path) }
        return store
    }

    func listJobs() async throws -> [JobDTO] { pool.jobs.list().map(Self.dto) }

    func job(id: UInt64) async throws -> JobDTO {
        guard let job = pool.jobs.job(id) else {
            throw ManagementError(code: "not_found", message: "job \(id) does not exist (finished jobs are kept for a while)")
        }
        return Self.dto(job)
    }

    func cancelJob(id: UInt64) async throws -> JobDTO {
        guard pool.jobs.cancel(id) else {
            throw ManagementError(code: "not_found", message: "job \(id) is not running")
        }
        return try await job(id: id)
    }

    func dto(_ snapshot: SnapshotInfo) -> SnapshotDTO {
        SnapshotDTO(
            volume: snapshot.volume, name: snapshot.name, size: snapshot.size,
            createdAt: Self.timestamp(milliseconds: snapshot.createdAt), attachments: snapshot.attachments,
            clones: snapshot.clones, exportURI: exportURI("\(snapshot.volume)@\(snapshot.name)"),
            creation: snapshot.creation.map {
                SnapshotCreationDTO(
                    writesPausedMicroseconds: $0.writesPaused.microseconds, totalMicroseconds: $0.total.microseconds)
            })
    }

    static func dto(_ job: JobInfo) -> JobDTO {
        let now = Date()
        let formatter = ISO8601DateFormatter()
        let elapsed = (job.finishedAt ?? now).timeIntervalSince(job.startedAt)
        let rate = elapsed > 0 ? Double(job.done) / elapsed : 0
        let eta: Double? =
            job.state == .running && rate > 0 && job.total >= job.done ? Double(job.total - job.done) / rate : nil
        return JobDTO(
            id: job.id, kind: job.kind, target: job.target, state: job.state.rawValue, done: job.done, total: job.total,
            unit: job.unit, startedAt: formatter.string(from: job.startedAt),
            finishedAt: job.finishedAt.map { formatter.string(from: $0) }, message: job.message, rate: rate,
            etaSeconds: eta)
    }

    static func timestamp(milliseconds: Int64) -> String {
        ISO8601DateFormatter().string(from: Date(timeIntervalSince1970: Double(milliseconds) / 1000))
    }
}
