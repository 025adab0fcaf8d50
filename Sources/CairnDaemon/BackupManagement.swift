import CairnAPI
import CairnBackup
import CairnControl
import CairnEngine
import CairnIO
import Foundation

/// The management API's backup calls over the daemon's `BackupCoordinator`. Blocking work (starting a
/// backup waits for its split; a restore reads whole archives) runs on the I/O executor.
struct BackupManagement: BackupService {
    let coordinator: BackupCoordinator
    let pool: Pool
    let executor: IOExecutor

    func run<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
        do {
            return try await executor.run(work)
        } catch let error as EngineError {
            throw ManagementError(code: error.code.rawValue, message: error.message)
        }
    }

    func listBackups() async throws -> [BackupDTO] {
        coordinator.list().map(dto)
    }

    func backup(id: String) async throws -> BackupDTO {
        dto(try await run { try coordinator.status(id: id) })
    }

    func startBackup(_ request: StartBackupRequest) async throws -> BackupDTO {
        let method = try request.method.map { name -> BackupMethod in
            guard let method = BackupMethod(rawValue: name) else {
                throw ManagementError(
                    code: "invalid_argument",
                    message: "unknown method '\(name)': use \(BackupMethod.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            return method
        } ?? .standard
        let coordinator = self.coordinator
        // Not on the I/O executor: the split waits for the volume's requests in flight, which need it.
        return dto(
            try await Self.onThread {
                try coordinator.start(
                    BackupRequest(
                        volume: request.volume, archivePath: request.archive, method: method,
                        sinceArchive: request.since, drainTimeoutSeconds: request.drainTimeoutSeconds))
            })
    }

    func sealBackup(id: String) async throws -> BackupDTO {
        dto(try await run { try coordinator.seal(id: id) })
    }

    func restoreBackup(_ request: RestoreBackupRequest) async throws -> JobDTO {
        guard !request.archives.isEmpty else {
            throw ManagementError(code: "invalid_argument", message: "give at least one archive to restore")
        }
        let pool = self.pool
        let restorer = BackupRestorer(pool: pool)
        try await Self.onThread { try restorer.precheck(paths: request.archives, to: request.volume, force: request.force) }
        // The data is verified and applied in a job: an archive can take longer than an API call may.
        let jobs = pool.jobs
        let id = jobs.start(kind: "restore", target: request.volume, total: 0, unit: "bytes")
        Thread {
            do {
                let report = try restorer.restore(paths: request.archives, to: request.volume, force: request.force) {
                    jobs.progress(id, done: $0, total: $1)
                }
                jobs.finish(
                    id, .succeeded,
                    message: "restored \(report.archives) archive(s) into \(report.created ? "new " : "")volume "
                        + "'\(report.volume)': \(report.dataBytes) bytes of data, \(report.zeroBytes) bytes zeroed")
            } catch {
                jobs.finish(id, .failed, message: (error as? EngineError)?.message ?? "\(error)")
            }
        }.start()
        return PoolManagement.dto(jobs.job(id)!)
    }

    /// Runs blocking control-plane work on a thread of its own, mapping engine errors to API errors.
    static func onThread<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
        do {
            return try await withCheckedThrowingContinuation { continuation in
                let thread = Thread { continuation.resume(with: Result { try work() }) }
                thread.start()
            }
        } catch let error as EngineError {
            throw ManagementError(code: error.code.rawValue, message: error.message)
        }
    }

    func dto(_ status: BackupStatus) -> BackupDTO {
        let record = status.record
        let format = ISO8601DateFormatter()
        return BackupDTO(
            id: record.id, volume: record.volume, method: record.method.rawValue, phase: record.phase.rawValue,
            archive: record.archivePath, kind: record.baseArchiveID == nil ? "full" : "incremental",
            baseArchiveID: record.baseArchiveID, startedAt: format.string(from: record.startedAt),
            splitAt: record.splitAt.map(format.string), finishedAt: record.finishedAt.map(format.string),
            drain: record.drain, sessionsAtSplit: record.sessionsAtSplit,
            sessionsOnA: status.sessionsOnA.sorted { $0.key < $1.key }.map { BackupSessionDTO(id: $0.key, address: $0.value) },
            sessionsLeftOnA: record.sessionsLeftOnA, job: record.jobID.flatMap { pool.jobs.job($0) }.map { PoolManagement.dto($0) },
            dataBytes: record.dataBytes, archiveBytes: record.archiveBytes, archiveSeconds: record.archiveSeconds,
            message: record.message)
    }
}
