import CairnEngine
import CairnIO
import Foundation

/// One backup as it is kept on disk (`<pool>/backups/<id>.json`, replaced atomically at each phase
/// change) and shown by `cairn backup status`. After a crash the phase says what to do: a backup
/// still draining is abandoned (its A sessions were cut mid-work, so A is not a consistent image); one
/// that was archiving starts its archive again from the frozen, durable image A.
///
/// What is fixed when the backup starts is kept as plain fields; what a phase learns lives in `state`,
/// inside that phase's case (`BackupRecord+State.swift`), and only `BackupMachine` changes it.
public struct BackupRecord: Sendable, Hashable {
    public enum Phase: String, Codable, Sendable, CaseIterable {
        /// `--method mirror`: building the full copy before the split.
        case establishing
        /// Split at T; waiting for the sessions on A to close.
        case draining
        /// A is frozen and durable; writing the archive.
        case archiving
        /// The archive is complete and durable; image A is being dropped (the log merged back).
        case discarding
        case succeeded
        case failed
    }

    public var id: String
    public var volume: String
    public var volumeID: UInt64
    public var volumeSize: UInt64
    public var method: BackupMethod
    public var archivePath: String
    /// Base archive of an incremental backup, its chain index and the snapshot it left as a base.
    public var baseArchiveID: String?
    public var baseChainIndex: UInt32?
    public var baseSnapshot: String?
    /// Snapshot of the volume at T (kept afterwards as the base of the next incremental backup).
    public var snapshot: String
    /// The volume holding image A's storage (clone, copy or log), dropped at the end.
    public var imageVolume: String
    public var drainTimeoutSeconds: Double?
    public var startedAt: Date
    /// Job of the current run, in any phase (not meaningful after a restart).
    public var jobID: UInt64?
    /// Where the backup is and what it learnt on the way there.
    public internal(set) var state: State

    /// A backup about to start: before T.
    init(
        id: String, volume: String, volumeID: UInt64, volumeSize: UInt64, method: BackupMethod, archivePath: String,
        baseArchiveID: String? = nil, baseChainIndex: UInt32? = nil, baseSnapshot: String? = nil, snapshot: String,
        imageVolume: String, drainTimeoutSeconds: Double? = nil, startedAt: Date, jobID: UInt64? = nil,
        state: State = .running(.splitting)
    ) {
        self.id = id
        self.volume = volume
        self.volumeID = volumeID
        self.volumeSize = volumeSize
        self.method = method
        self.archivePath = archivePath
        self.baseArchiveID = baseArchiveID
        self.baseChainIndex = baseChainIndex
        self.baseSnapshot = baseSnapshot
        self.snapshot = snapshot
        self.imageVolume = imageVolume
        self.drainTimeoutSeconds = drainTimeoutSeconds
        self.startedAt = startedAt
        self.jobID = jobID
        self.state = state
    }

    /// The phase `cairn backup status` shows. Before T it depends on the method: the mirror method is
    /// building its copy (establishing); the others are as good as split (draining), as they always showed.
    public var phase: Phase {
        switch state {
        case .running(.splitting): method == .mirror ? .establishing : .draining
        case .running(.draining): .draining
        case .running(.archiving): .archiving
        case .running(.discarding): .discarding
        case .succeeded: .succeeded
        case .failed: .failed
        }
    }

    var isFinished: Bool { phase == .succeeded || phase == .failed }

    /// The stage the backup is in, or the one it stopped in (a succeeded backup stopped after discarding).
    var stage: Stage {
        switch state {
        case .running(let stage), .failed(let stage, _): stage
        case .succeeded(let archived, _): .discarding(archived)
        }
    }

    private var split: Split? {
        switch stage {
        case .splitting: nil
        case .draining(let split): split
        case .archiving(let archiving): archiving.freeze.split
        case .discarding(let archived): archived.archiving.freeze.split
        }
    }

    private var freeze: Freeze? { archiving?.freeze }

    private var archiving: Archiving? {
        switch stage {
        case .splitting, .draining: nil
        case .archiving(let archiving): archiving
        case .discarding(let archived): archived.archiving
        }
    }

    private var archived: Archived? {
        if case .discarding(let archived) = stage { return archived }
        return nil
    }

    private var ending: Ending? {
        switch state {
        case .running: nil
        case .succeeded(_, let ending), .failed(_, let ending): ending
        }
    }

    /// T, once split.
    public var splitAt: Date? { split?.at }
    /// Sessions that stayed on A at T.
    public var sessionsAtSplit: Int? { split?.sessionsOnA }
    /// How A was frozen: "drained", "sealed" or "timeout".
    public var drain: String? { freeze?.drain }
    /// Sessions still on A when a seal or timeout froze it.
    public var sessionsLeftOnA: [String]? { freeze?.sessionsLeftOnA }
    /// When the archive started being written (the throughput of a running archive is measured from it).
    public var archiveStartedAt: Date? { archiving?.startedAt }
    /// True when the archive was resumed after a daemon restart.
    public var resumed: Bool? { archiving?.resumed == true ? true : nil }
    /// Volume data the archive carries, once complete.
    public var dataBytes: UInt64? { archived?.dataBytes }
    /// Size of the archive file, once complete.
    public var archiveBytes: UInt64? { archived?.archiveBytes }
    /// Time spent writing the archive (not the drain): what archive throughput is measured over.
    public var archiveSeconds: Double? { archived?.seconds }
    /// When the backup succeeded or failed.
    public var finishedAt: Date? { ending?.at }
    /// Why it failed (or that its archive was written again after a restart).
    public var message: String? { ending?.message }
}

/// The backups directory: one JSON file per backup, replaced with `AtomicFile`.
struct BackupRecordStore {
    let directory: String
    let fileSystem: any DurableFileSystem

    init(directory: String, fileSystem: any DurableFileSystem = PosixFileSystem()) throws {
        self.directory = directory
        self.fileSystem = fileSystem
        do {
            try fileSystem.makeDirectoryDurably(directory)
            try AtomicFile.removeLeftovers(in: directory, fileSystem: fileSystem)
        } catch {
            throw EngineError(.ioFailure, "cannot prepare the backups directory \(directory): \(error)", cause: error)
        }
    }

    func save(_ record: BackupRecord) throws {
        let path = directory + "/" + record.id + ".json"
        do {
            try AtomicFile.replace(path, with: Array(try Self.encode(record)), in: fileSystem)
        } catch {
            throw EngineError(.ioFailure, "cannot save the backup record \(path): \(error)", cause: error)
        }
    }

    /// Every backup record, oldest first. An unreadable record is an error naming its file: dropping it
    /// would forget a backup whose image volume and snapshot still hold space.
    func loadAll() throws -> [BackupRecord] {
        try fileSystem.names(in: directory).filter { $0.hasSuffix(".json") }.map { name in
            let path = directory + "/" + name
            guard let bytes = try fileSystem.contents(of: path) else {
                throw EngineError(.ioFailure, "the backup record \(path) vanished while being read")
            }
            do {
                return try Self.decode(Data(bytes))
            } catch {
                throw EngineError(
                    .corrupt, "the backup record \(path) is unreadable (\(error)); move it away to start without it",
                    cause: error)
            }
        }.sorted { $0.startedAt < $1.startedAt }
    }

    static func encode(_ record: BackupRecord) throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted]
        encoder.dateEncodingStrategy = .iso8601
        return try encoder.encode(record)
    }

    static func decode(_ data: Data) throws -> BackupRecord {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return try decoder.decode(BackupRecord.self, from: data)
    }

    func journalPath(for id: String) -> String { directory + "/" + id + ".log-table" }

    /// Makes a rename or unlink in `directory` durable.
    static func syncDirectory(_ directory: String) throws {
        try PosixFileSystem().syncDirectory(directory)
    }
}
