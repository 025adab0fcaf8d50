import CairnEngine
import CairnIO
import Foundation

/// One backup as it is kept on disk (`<pool>/backups/<id>.json`, replaced atomically at each phase
/// change) and shown by `cairn backup status`. After a crash the phase says what to do: a backup
/// still draining is abandoned (its A sessions were cut mid-work, so A is not a consistent image); one
/// that was archiving starts its archive again from the frozen, durable image A.
public struct BackupRecord: Codable, Sendable, Hashable {
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
    public var phase: Phase
    /// Snapshot of the volume at T (kept afterwards as the base of the next incremental backup).
    public var snapshot: String
    /// The volume holding image A's storage (clone, copy or log), dropped at the end.
    public var imageVolume: String
    public var drainTimeoutSeconds: Double?
    public var startedAt: Date
    public var splitAt: Date?
    public var finishedAt: Date?
    public var drain: String?
    public var sessionsAtSplit: Int?
    /// Sessions still on A when a seal or timeout froze it.
    public var sessionsLeftOnA: [String]?
    public var message: String?
    public var dataBytes: UInt64?
    public var archiveBytes: UInt64?
    /// Time spent writing the archive (not the drain): what archive throughput is measured over.
    public var archiveSeconds: Double?
    /// When the archive started being written (the throughput of a running archive is measured from it).
    public var archiveStartedAt: Date?
    /// Job of the current run (not meaningful after a restart).
    public var jobID: UInt64?
    /// True when the archive was resumed after a daemon restart.
    public var resumed: Bool?

    var isFinished: Bool { phase == .succeeded || phase == .failed }
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
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted]
        encoder.dateEncodingStrategy = .iso8601
        let data = try encoder.encode(record)
        let path = directory + "/" + record.id + ".json"
        do {
            try AtomicFile.replace(path, with: Array(data), in: fileSystem)
        } catch {
            throw EngineError(.ioFailure, "cannot save the backup record \(path): \(error)", cause: error)
        }
    }

    /// Every backup record, oldest first. An unreadable record is an error naming its file: dropping it
    /// would forget a backup whose image volume and snapshot still hold space.
    func loadAll() throws -> [BackupRecord] {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return try fileSystem.names(in: directory).filter { $0.hasSuffix(".json") }.map { name in
            let path = directory + "/" + name
            guard let bytes = try fileSystem.contents(of: path) else {
                throw EngineError(.ioFailure, "the backup record \(path) vanished while being read")
            }
            do {
                return try decoder.decode(BackupRecord.self, from: Data(bytes))
            } catch {
                throw EngineError(
                    .corrupt, "the backup record \(path) is unreadable (\(error)); move it away to start without it",
                    cause: error)
            }
        }.sorted { $0.startedAt < $1.startedAt }
    }

    func journalPath(for id: String) -> String { directory + "/" + id + ".log-table" }

    /// Makes a rename or unlink in `directory` durable.
    static func syncDirectory(_ directory: String) throws {
        try PosixFileSystem().syncDirectory(directory)
    }
}
