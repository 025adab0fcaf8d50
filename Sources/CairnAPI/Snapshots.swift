/// A snapshot as the management API shows it.
public struct SnapshotDTO: Codable, Sendable, Hashable {
    public var volume: String
    public var name: String
    /// Volume size when it was taken.
    public var size: UInt64
    /// Creation time, ISO 8601.
    public var createdAt: String
    /// Sessions reading it over NBD.
    public var attachments: Int
    /// Clones made from it (it cannot be deleted while they exist).
    public var clones: [String]
    /// Where a client reads it: nbd://host:port/volume@name (read-only).
    public var exportURI: String?
    /// Only in the answer to a create: how long host writes were held back, and the whole creation.
    public var creation: SnapshotCreationDTO?

    public init(
        volume: String, name: String, size: UInt64, createdAt: String, attachments: Int, clones: [String],
        exportURI: String?, creation: SnapshotCreationDTO? = nil
    ) {
        self.creation = creation
        self.volume = volume
        self.name = name
        self.size = size
        self.createdAt = createdAt
        self.attachments = attachments
        self.clones = clones
        self.exportURI = exportURI
    }
}

/// Timing of one snapshot creation, in microseconds.
public struct SnapshotCreationDTO: Codable, Sendable, Hashable {
    /// The epoch barrier: writes in flight drained, no new write started.
    public var writesPausedMicroseconds: Int64
    /// The whole creation, including the commits before and after the barrier (host I/O runs on).
    public var totalMicroseconds: Int64

    public init(writesPausedMicroseconds: Int64, totalMicroseconds: Int64) {
        self.writesPausedMicroseconds = writesPausedMicroseconds
        self.totalMicroseconds = totalMicroseconds
    }
}

/// POST /v1/volumes/{volume}/snapshots
public struct CreateSnapshotRequest: Codable, Sendable {
    public var name: String
    public init(name: String) { self.name = name }
}

/// POST /v1/volumes/{volume}/snapshots/{snapshot}/clone
public struct CloneRequest: Codable, Sendable {
    public var name: String
    public init(name: String) { self.name = name }
}

/// GET /v1/volumes/{volume}/changes?from=A[&to=B]
public struct ChangesDTO: Codable, Sendable, Hashable {
    public struct Extent: Codable, Sendable, Hashable {
        public var offset: UInt64
        public var length: UInt64
        public init(offset: UInt64, length: UInt64) {
            self.offset = offset
            self.length = length
        }
    }

    public var volume: String
    public var from: String
    /// nil: the live volume.
    public var to: String?
    public var changedBytes: UInt64
    public var extents: [Extent]

    public init(volume: String, from: String, to: String?, changedBytes: UInt64, extents: [Extent]) {
        self.volume = volume
        self.from = from
        self.to = to
        self.changedBytes = changedBytes
        self.extents = extents
    }
}

/// A background job (reclaim after a snapshot deletion, dedup, ...).
public struct JobDTO: Codable, Sendable, Hashable {
    public var id: UInt64
    public var kind: String
    public var target: String
    /// running, succeeded, failed, cancelled.
    public var state: String
    public var done: UInt64
    public var total: UInt64
    public var unit: String
    public var startedAt: String
    public var finishedAt: String?
    public var message: String?
    /// Units per second since the job started (until it finished).
    public var rate: Double
    /// Seconds left at that rate; nil when the job is not running or has not made progress yet.
    public var etaSeconds: Double?

    public init(
        id: UInt64, kind: String, target: String, state: String, done: UInt64, total: UInt64, unit: String,
        startedAt: String, finishedAt: String?, message: String?, rate: Double = 0, etaSeconds: Double? = nil
    ) {
        self.rate = rate
        self.etaSeconds = etaSeconds
        self.id = id
        self.kind = kind
        self.target = target
        self.state = state
        self.done = done
        self.total = total
        self.unit = unit
        self.startedAt = startedAt
        self.finishedAt = finishedAt
        self.message = message
    }
}

/// DELETE of a snapshot: it is gone; its space comes back through `job`.
public struct SnapshotDeletionDTO: Codable, Sendable, Hashable {
    public var deleted: String
    public var job: JobDTO?
    public init(deleted: String, job: JobDTO?) {
        self.deleted = deleted
        self.job = job
    }
}
