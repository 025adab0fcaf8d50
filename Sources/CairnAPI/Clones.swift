/// A clone as the management API shows it (GET /v1/clones, /v1/clones/{name}).
public struct CloneDTO: Codable, Sendable, Hashable {
    public var name: String
    public var source: String
    /// synchronizing, synchronized, fractured, reverse-syncing, restoring.
    public var state: String
    /// Bytes per delta-map bit.
    public var extentSize: UInt64
    public var extentCount: UInt64
    /// Extents set in the clone's delta map (where clone and source differ, or are still to copy).
    public var deltaExtents: UInt64
    /// Extents set in the protected restore map (restoring only).
    public var restoreMapExtents: UInt64?
    /// The job working on the clone now, or the last one.
    public var job: JobDTO?
    /// Creation time, ISO 8601.
    public var createdAt: String

    public init(
        name: String, source: String, state: String, extentSize: UInt64, extentCount: UInt64, deltaExtents: UInt64,
        restoreMapExtents: UInt64?, job: JobDTO?, createdAt: String
    ) {
        self.name = name
        self.source = source
        self.state = state
        self.extentSize = extentSize
        self.extentCount = extentCount
        self.deltaExtents = deltaExtents
        self.restoreMapExtents = restoreMapExtents
        self.job = job
        self.createdAt = createdAt
    }
}

/// POST /v1/clones: create clone `name` of `source` and synchronize it in the background.
public struct AddCloneRequest: Codable, Sendable {
    public var source: String
    public var name: String
    /// Bytes per delta-map bit (power of two, 4 KiB to 64 MiB); fixed by the group's first clone.
    public var extentSize: UInt64?
    /// The pool to put the clone in: only the source's own pool is supported.
    public var pool: String?

    public init(source: String, name: String, extentSize: UInt64? = nil, pool: String? = nil) {
        self.source = source
        self.name = name
        self.extentSize = extentSize
        self.pool = pool
    }
}

/// POST /v1/clones/{name}/restore
public struct RestoreCloneRequest: Codable, Sendable {
    /// Must be true: the protected restore (the clone is never modified).
    public var protected: Bool
    public init(protected: Bool) { self.protected = protected }
}

extension APIPath {
    public static let clones = "/v1/clones"
    public static func clone(_ name: String) -> String { "/v1/clones/\(component(name))" }
    /// fracture, sync, reverse-sync, restore.
    public static func cloneAction(_ name: String, _ action: String) -> String { clone(name) + "/" + action }
}
