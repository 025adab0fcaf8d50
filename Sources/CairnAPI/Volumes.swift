/// A volume as the management API shows it.
public struct VolumeDTO: Codable, Sendable, Hashable {
    public var name: String
    /// Virtual size in bytes.
    public var size: UInt64
    public var chunkSize: UInt32
    /// Bytes of data written to the volume's own chunks.
    public var allocatedBytes: UInt64
    public var snapshotCount: Int
    /// NBD sessions attached now.
    public var attachments: Int
    /// Creation time, ISO 8601.
    public var createdAt: String
    /// "volume@snapshot" for a clone.
    public var origin: String?
    /// Where a client attaches: nbd://host:port/name.
    public var exportURI: String?
    /// Store that data preserved for snapshots is copied out to (nil: kept in the pool).
    public var preserveStore: String?

    public init(
        name: String, size: UInt64, chunkSize: UInt32, allocatedBytes: UInt64, snapshotCount: Int, attachments: Int,
        createdAt: String, origin: String?, exportURI: String?, preserveStore: String? = nil
    ) {
        self.preserveStore = preserveStore
        self.name = name
        self.size = size
        self.chunkSize = chunkSize
        self.allocatedBytes = allocatedBytes
        self.snapshotCount = snapshotCount
        self.attachments = attachments
        self.createdAt = createdAt
        self.origin = origin
        self.exportURI = exportURI
    }
}

/// POST /v1/volumes
public struct CreateVolumeRequest: Codable, Sendable {
    public var name: String
    public var size: UInt64
    public var chunkSize: UInt32?
    public var preserveStore: String?

    public init(name: String, size: UInt64, chunkSize: UInt32? = nil, preserveStore: String? = nil) {
        self.name = name
        self.size = size
        self.chunkSize = chunkSize
        self.preserveStore = preserveStore
    }
}

/// PATCH /v1/volumes/{name}: resize, rename, and/or set the preserve store ("" clears it). Shrinking
/// past written data needs `force`.
public struct UpdateVolumeRequest: Codable, Sendable {
    public var size: UInt64?
    public var name: String?
    public var force: Bool?
    public var preserveStore: String?

    public init(size: UInt64? = nil, name: String? = nil, force: Bool? = nil, preserveStore: String? = nil) {
        self.size = size
        self.name = name
        self.force = force
        self.preserveStore = preserveStore
    }
}

/// A store: another directory (disk) that can hold slot files (GET/POST /v1/stores).
public struct StoreDTO: Codable, Sendable, Hashable {
    public var name: String
    public var path: String
    public init(name: String, path: String) {
        self.name = name
        self.path = path
    }
}
