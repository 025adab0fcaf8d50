import CairnArchive
import CairnEngine
import Foundation
import Logging
import Synchronization

/// What `cairn backup start` asks for.
public struct BackupRequest: Sendable {
    public var volume: String
    /// Absolute path of the archive to write (a FIFO streams it).
    public var archivePath: String
    public var method: BackupMethod
    /// Path of the archive this one is an increment of.
    public var sinceArchive: String?
    /// Freeze A after this long even if sessions are still on it (reported as "timeout").
    public var drainTimeoutSeconds: Double?

    public init(
        volume: String, archivePath: String, method: BackupMethod = .standard, sinceArchive: String? = nil,
        drainTimeoutSeconds: Double? = nil
    ) {
        self.volume = volume
        self.archivePath = archivePath
        self.method = method
        self.sinceArchive = sinceArchive
        self.drainTimeoutSeconds = drainTimeoutSeconds
    }
}

/// A backup as `status` shows it: the record plus the sessions still on image A.
public struct BackupStatus: Sendable {
    public var record: BackupRecord
    /// Sessions on A now: id → remote address.
    public var sessionsOnA: [UInt64: String]
}

/// The control plane of consistent backups for one pool: knows every NBD session of every volume (to
/// split them at T), owns the per-volume routes the sessions' I/O passes, runs each backup on its own
/// thread (split, drain, archive, discard A), and finishes or abandons backups a crash interrupted.
public final class BackupCoordinator: @unchecked Sendable {
    // @unchecked: mutable state lives in `state` (a Mutex).
    let pool: Pool
    let store: BackupRecordStore
    let logger: Logger

    private struct State {
        var routes: [UInt64: VolumeRoute] = [:]
        /// Open sessions per volume: session id → remote address.
        var sessions: [UInt64: [UInt64: String]] = [:]
        var records: [String: BackupRecord] = [:]
        /// Running backups by id, with their mirror once split.
        var mirrors: [String: OneWayMirror] = [:]
        /// Volumes with a backup running (one at a time per volume).
        var busyVolumes: Set<UInt64> = []
        /// Backups that ended since this coordinator started, by final phase (for /metrics).
        var finished: [String: Int] = [:]
    }

    private let state = Mutex(State())

    /// Prefix of every name a backup adds to the pool (snapshots and image volumes).
    public static let namePrefix = "backup-"
    /// Backups of a volume whose T snapshot is kept as a changed-block base, newest first: an
    /// incremental backup may be taken `--since` any of them. Each kept snapshot pins the blocks
    /// overwritten since it was taken, so the number is bounded; 4 covers a weekly full with daily
    /// differentials against it plus the latest increment, without keeping a month of overwrites.
    public static let retainedBases = 4

    /// Pause per MiB an archive reads (a rate limit; zero: none).
    let archiveReadDelay: Duration

    public init(pool: Pool, dataDirectory: String, logger: Logger, archiveReadDelay: Duration = .zero) throws {
        self.pool = pool
        self.archiveReadDelay = archiveReadDelay
        self.logger = logger
        store = try BackupRecordStore(directory: dataDirectory + "/backups")
        // Job ids belong to the process that ran the job: they mean nothing after a restart.
        let records = try store.loadAll().map { record -> BackupRecord in
            var record = record
            record.jobID = nil
            return record
        }
        state.withLock { s in for record in records { s.records[record.id] = record } }
    }

    // MARK: Sessions

    /// The route every request of `volumeID` passes.
    public func route(volumeID: UInt64) -> VolumeRoute {
        state.withLock { s in
            if let route = s.routes[volumeID] { return route }
            let route = VolumeRoute()
            s.routes[volumeID] = route
            return route
        }
    }

    /// A session attached to the live volume `volumeID`.
    public func sessionAttached(volumeID: UInt64, session: UInt64, address: String) {
        state.withLock { s in s.sessions[volumeID, default: [:]][session] = address }
    }

    /// A session detached: it leaves image A if it was there (the last one drains A).
    public func sessionDetached(volumeID: UInt64, session: UInt64) {
        let route = state.withLock { s -> VolumeRoute? in
            s.sessions[volumeID]?[session] = nil
            return s.routes[volumeID]
        }
        route?.mirror?.sessionClosed(session)
    }

    /// The id of the backup splitting the live volume `name` now, if any: it must not be resized, renamed,
    /// rolled back or deleted until that backup ends (its images and records name the volume).
    public func runningBackup(ofVolume name: String) -> String? {
        state.withLock { s in s.records.values.first { !$0.isFinished && $0.volume == name }?.id }
    }

    /// True for the volumes a backup made for its images: hosts may not open them.
    public func isImageVolume(_ name: String) -> Bool {
        state.withLock { s in s.records.values.contains { !$0.isFinished && $0.imageVolume == name } }
    }

    // MARK: Commands

    public func list() -> [BackupStatus] {
        state.withLock { s in
            s.records.values.sorted { $0.startedAt < $1.startedAt }.map {
                BackupStatus(record: $0, sessionsOnA: s.mirrors[$0.id]?.sessionsStillOnA ?? [:])
            }
        }
    }

    public func status(id: String) throws -> BackupStatus {
        guard let status = list().first(where: { $0.record.id == id }) else {
            throw EngineError(.notFound, "no backup with id '\(id)'; `cairn backup status` lists them")
        }
        return status
    }

    /// Seals a draining backup: image A is taken as consistent now; sessions still on A move to B.
    public func seal(id: String) throws -> BackupStatus {
        let mirror = state.withLock { $0.mirrors[id] }
        guard let mirror, mirror.seal() else {
            throw EngineError(.busy, "backup '\(id)' is not draining: only a backup waiting for its sessions can be sealed")
        }
        return try status(id: id)
    }

    /// Starts a backup: checks everything that can be refused, records it, and runs it on a thread.
    public func start(_ request: BackupRequest) throws -> BackupStatus {
        let info = try pool.volumes.info(named: request.volume)
        if let timeout = request.drainTimeoutSeconds, !(timeout > 0) {
            throw EngineError(.invalidArgument, "the drain timeout must be a positive number of seconds")
        }
        guard request.archivePath.hasPrefix("/") else {
            throw EngineError(.invalidArgument, "the archive path must be absolute")
        }
        try Self.checkArchiveTarget(request.archivePath)
        var base: (id: String, index: UInt32, snapshot: String)?
        if let since = request.sinceArchive {
            let header: ArchiveHeader
            do {
                header = try ArchiveReader(input: try FileArchiveInput(path: since), name: since).header
            } catch let error as ArchiveError {
                throw EngineError(.invalidArgument, error.message)
            }
            guard header.volume == request.volume, header.volumeSize == info.size else {
                throw EngineError(
                    .invalidArgument, "\(since) is a backup of '\(header.volume)' (\(header.volumeSize) bytes), not of this volume")
            }
            let snapshot = Self.snapshotName(header.archiveID)
            guard (try? pool.snapshots.info(volume: request.volume, name: snapshot)) != nil else {
                throw EngineError(
                    .notFound,
                    "the changed-block base of \(since) (snapshot \(request.volume)@\(snapshot)) is gone: the "
                        + "\(Self.retainedBases) latest successful backups of a volume can be the base of an incremental "
                        + "one; use a newer archive with --since, or take a full backup")
            }
            base = (header.archiveID, header.chainIndex, snapshot)
        }
        let id = Self.newID()
        let record = BackupRecord(
            id: id, volume: request.volume, volumeID: info.id, volumeSize: info.size, method: request.method,
            archivePath: request.archivePath, baseArchiveID: base?.id, baseChainIndex: base?.index,
            baseSnapshot: base?.snapshot, snapshot: Self.snapshotName(id), imageVolume: Self.namePrefix + id + "-image",
            drainTimeoutSeconds: request.drainTimeoutSeconds, startedAt: Date())
        try state.withLock { s in
            guard !s.busyVolumes.contains(info.id) else {
                throw EngineError(.busy, "a backup of '\(request.volume)' is already running")
            }
            s.busyVolumes.insert(info.id)
            s.records[id] = record
        }
        do {
            try store.save(record)
        } catch {
            state.withLock { s in
                s.busyVolumes.remove(info.id)
                s.records[id] = nil
            }
            throw EngineError(.ioFailure, "cannot record the backup in \(store.directory)", cause: error)
        }
        let run = BackupRun(
            coordinator: self, record: record, volumeChunkSize: info.chunkSize, route: route(volumeID: info.id))
        let ready = DispatchSemaphore(value: 0)
        let thread = Thread {
            run.execute(splitDone: { ready.signal() })
        }
        thread.name = "cairn-backup"
        thread.start()
        // Answer once the split happened (or failed), so the caller sees T and the sessions on A; with
        // `--method mirror`, once the mirror copy has started (T comes when it completes).
        ready.wait()
        return try status(id: id)
    }

    /// The archive may be a new file or a FIFO (streaming); an existing file is never overwritten.
    static func checkArchiveTarget(_ path: String) throws {
        var status = stat()
        if stat(path, &status) == 0 {
            guard (status.st_mode & S_IFMT) == S_IFIFO else {
                throw EngineError(.alreadyExists, "\(path) exists; a backup never overwrites a file")
            }
            return
        }
        let directory = (path as NSString).deletingLastPathComponent
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw EngineError(.notFound, "directory \(directory) does not exist")
        }
    }

    static func snapshotName(_ archiveID: String) -> String { namePrefix + archiveID }

    static func newID() -> String {
        let formatter = DateFormatter()
        formatter.dateFormat = "yyyyMMdd'T'HHmmss"
        formatter.timeZone = TimeZone(identifier: "UTC")
        return formatter.string(from: Date()) + "-" + String(UUID().uuidString.prefix(8)).lowercased()
    }

    // MARK: Used by runs

    /// Every backup with its sessions on A, and the finished-backup counters, read together.
    func metricsSnapshot() -> ([BackupStatus], [String: Int]) {
        state.withLock { s in
            let statuses = s.records.values.sorted { $0.startedAt < $1.startedAt }.map {
                BackupStatus(record: $0, sessionsOnA: s.mirrors[$0.id]?.sessionsStillOnA ?? [:])
            }
            return (statuses, s.finished)
        }
    }

    func sessions(of volumeID: UInt64) -> [UInt64: String] {
        state.withLock { $0.sessions[volumeID] ?? [:] }
    }

    func update(_ record: BackupRecord, mirror: OneWayMirror? = nil) {
        state.withLock { s in
            if record.isFinished, s.records[record.id]?.isFinished != true { s.finished[record.phase.rawValue, default: 0] += 1 }
            s.records[record.id] = record
            if let mirror { s.mirrors[record.id] = mirror }
            if record.isFinished {
                s.mirrors[record.id] = nil
                s.busyVolumes.remove(record.volumeID)
            }
        }
        do {
            try store.save(record)
        } catch {
            logger.error("cannot record backup state", metadata: ["backup": "\(record.id)", "error": "\(error)"])
        }
    }
}
