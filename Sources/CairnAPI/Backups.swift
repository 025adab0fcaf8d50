/// A backup as the management API shows it (GET /v1/backups, /v1/backups/{id}).
public struct BackupDTO: Codable, Sendable, Hashable {
    public var id: String
    public var volume: String
    /// mirror, log or cow.
    public var method: String
    /// establishing, draining, archiving, succeeded, failed.
    public var phase: String
    public var archive: String
    /// full or incremental.
    public var kind: String
    public var baseArchiveID: String?
    public var startedAt: String
    /// The split time T.
    public var splitAt: String?
    public var finishedAt: String?
    /// How A stopped changing: drained, sealed, timeout.
    public var drain: String?
    public var sessionsAtSplit: Int?
    /// Sessions still on image A now.
    public var sessionsOnA: [BackupSessionDTO]
    /// Sessions that were still on A when a seal or timeout froze it.
    public var sessionsLeftOnA: [String]?
    public var job: JobDTO?
    public var dataBytes: UInt64?
    public var archiveBytes: UInt64?
    /// Seconds spent writing the archive (after the drain).
    public var archiveSeconds: Double?
    /// Why it failed, or a note (resumed after a restart).
    public var message: String?

    public init(
        id: String, volume: String, method: String, phase: String, archive: String, kind: String,
        baseArchiveID: String?, startedAt: String, splitAt: String?, finishedAt: String?, drain: String?,
        sessionsAtSplit: Int?, sessionsOnA: [BackupSessionDTO], sessionsLeftOnA: [String]?, job: JobDTO?,
        dataBytes: UInt64?, archiveBytes: UInt64?, archiveSeconds: Double? = nil, message: String?
    ) {
        self.archiveSeconds = archiveSeconds
        self.id = id
        self.volume = volume
        self.method = method
        self.phase = phase
        self.archive = archive
        self.kind = kind
        self.baseArchiveID = baseArchiveID
        self.startedAt = startedAt
        self.splitAt = splitAt
        self.finishedAt = finishedAt
        self.drain = drain
        self.sessionsAtSplit = sessionsAtSplit
        self.sessionsOnA = sessionsOnA
        self.sessionsLeftOnA = sessionsLeftOnA
        self.job = job
        self.dataBytes = dataBytes
        self.archiveBytes = archiveBytes
        self.message = message
    }
}

/// An NBD session still on image A.
public struct BackupSessionDTO: Codable, Sendable, Hashable {
    public var id: UInt64
    public var address: String
    public init(id: UInt64, address: String) {
        self.id = id
        self.address = address
    }
}

/// POST /v1/backups
public struct StartBackupRequest: Codable, Sendable {
    public var volume: String
    /// Absolute path of the archive file to write (or of a FIFO to stream into).
    public var archive: String
    /// mirror, log or cow (default: cow).
    public var method: String?
    /// Absolute path of the archive this one is an increment of.
    public var since: String?
    public var drainTimeoutSeconds: Double?

    public init(volume: String, archive: String, method: String?, since: String?, drainTimeoutSeconds: Double?) {
        self.volume = volume
        self.archive = archive
        self.method = method
        self.since = since
        self.drainTimeoutSeconds = drainTimeoutSeconds
    }
}

/// POST /v1/restores: apply a full archive and its increments, in order, to a volume.
public struct RestoreBackupRequest: Codable, Sendable {
    public var archives: [String]
    public var volume: String
    /// Overwrite an existing volume.
    public var force: Bool

    public init(archives: [String], volume: String, force: Bool) {
        self.archives = archives
        self.volume = volume
        self.force = force
    }
}

extension APIPath {
    public static let backups = "/v1/backups"
    public static func backup(_ id: String) -> String { "/v1/backups/\(component(id))" }
    public static func sealBackup(_ id: String) -> String { backup(id) + "/seal" }
    public static let restores = "/v1/restores"
}
