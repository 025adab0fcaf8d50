/// Durable description of a volume (one row of `volumes`).
public struct VolumeRecord: Hashable, Sendable {
    /// Pool-unique, never reused; mappings refer to it, so renames touch one row.
    public var id: UInt64
    public var name: String
    public var size: UInt64
    public var chunkSize: UInt32
    /// The epoch live writes are born in; a snapshot takes the current value and increments it.
    public var epoch: UInt32
    /// For a clone: the volume and snapshot epoch it falls through to.
    public var parent: ParentLink?
    /// Milliseconds since 1970.
    public var createdAt: Int64
    /// Store that data preserved for snapshots is copied out to on first overwrite (the LUN map of the COW-offload design);
    /// nil keeps it where it is, in the pool.
    public var preserveStore: String?

    public init(
        id: UInt64, name: String, size: UInt64, chunkSize: UInt32, epoch: UInt32, parent: ParentLink?,
        createdAt: Int64, preserveStore: String? = nil
    ) {
        self.id = id
        self.name = name
        self.size = size
        self.chunkSize = chunkSize
        self.epoch = epoch
        self.parent = parent
        self.createdAt = createdAt
        self.preserveStore = preserveStore
    }
}

/// A clone's origin: it reads `volumeID` as of `epoch` wherever it has no version of its own.
public struct ParentLink: Hashable, Sendable {
    public var volumeID: UInt64
    public var epoch: UInt32
    public init(volumeID: UInt64, epoch: UInt32) {
        self.volumeID = volumeID
        self.epoch = epoch
    }
}

/// Durable description of a snapshot (one row of `snapshots`).
public struct SnapshotRecord: Hashable, Sendable {
    public var volumeID: UInt64
    public var name: String
    public var epoch: UInt32
    /// Size of the volume when the snapshot was taken.
    public var size: UInt64
    public var createdAt: Int64

    public init(volumeID: UInt64, name: String, epoch: UInt32, size: UInt64, createdAt: Int64) {
        self.volumeID = volumeID
        self.name = name
        self.epoch = epoch
        self.size = size
        self.createdAt = createdAt
    }
}

/// A slot file (one row of `slot_files`): all slots in it are `chunkSize` bytes.
public struct SlotFileRecord: Hashable, Sendable {
    public var id: UInt16
    /// File name, inside the pool's data directory or inside `store`'s directory.
    public var name: String
    public var chunkSize: UInt32
    /// The store the file lives in (nil: the pool's own data directory).
    public var store: String?

    public init(id: UInt16, name: String, chunkSize: UInt32, store: String? = nil) {
        self.id = id
        self.name = name
        self.chunkSize = chunkSize
        self.store = store
    }
}

/// Another directory (usually on another disk) that holds slot files: where a volume's preserved data
/// can be placed (one row of `stores`).
public struct StoreRecord: Hashable, Sendable {
    public var name: String
    public var path: String

    public init(name: String, path: String) {
        self.name = name
        self.path = path
    }
}

/// One durable version of one chunk (one row of `mappings`).
public struct MappingRow: Hashable, Sendable {
    public var volumeID: UInt64
    public var chunk: UInt64
    public var version: ChunkVersion

    public init(volumeID: UInt64, chunk: UInt64, version: ChunkVersion) {
        self.volumeID = volumeID
        self.chunk = chunk
        self.version = version
    }
}

/// Everything but the mappings, as loaded at open.
public struct PoolCatalog: Sendable {
    public var poolID: String
    public var formatVersion: Int
    public var stores: [StoreRecord] = []
    public var slotFiles: [SlotFileRecord]
    public var volumes: [VolumeRecord]
    public var snapshots: [SnapshotRecord]
    /// Clone groups and the stored blocks of their maps.
    public var cloneGroups: [CloneGroupRecord] = []
    public var cloneMapBlocks: [CloneMapBlock] = []

    public init(
        poolID: String, formatVersion: Int, slotFiles: [SlotFileRecord], volumes: [VolumeRecord],
        snapshots: [SnapshotRecord]
    ) {
        self.poolID = poolID
        self.formatVersion = formatVersion
        self.slotFiles = slotFiles
        self.volumes = volumes
        self.snapshots = snapshots
    }
}

/// The changes one group commit makes durable, applied atomically.
public struct MetadataTransaction: Sendable {
    public var upsertStores: [StoreRecord] = []
    public var upsertSlotFiles: [SlotFileRecord] = []
    public var upsertVolumes: [VolumeRecord] = []
    /// Volumes to remove, with all their mappings and snapshots.
    public var deleteVolumes: [UInt64] = []
    public var upsertSnapshots: [SnapshotRecord] = []
    public var deleteSnapshots: [(volumeID: UInt64, name: String)] = []
    /// Replace every version of these chunks (an empty list deletes the chunk's rows).
    public var chunks: [(volumeID: UInt64, chunk: UInt64, versions: [ChunkVersion])] = []
    /// Clone groups to remove with their maps (applied before the upserts), to write, and map blocks.
    public var deleteCloneGroups: [UInt64] = []
    public var upsertCloneGroups: [CloneGroupRecord] = []
    public var cloneMapBlocks: [CloneMapBlock] = []
    /// The metadata journal's frames up to this sequence number are in the store once this commits
    /// (set by the journal's checkpoints only; nil leaves the stored number as it is).
    public var journalApplied: UInt64?

    public init() {}

    public var isEmpty: Bool {
        upsertStores.isEmpty && upsertSlotFiles.isEmpty && upsertVolumes.isEmpty && deleteVolumes.isEmpty && upsertSnapshots.isEmpty
            && deleteSnapshots.isEmpty && chunks.isEmpty && deleteCloneGroups.isEmpty && upsertCloneGroups.isEmpty
            && cloneMapBlocks.isEmpty
    }
}

/// The durable half of the pool's metadata. Implementations must apply a transaction atomically and
/// durably before `commit` returns (SQLite: one transaction, WAL, synchronous=FULL).
public protocol MetadataStore: AnyObject, Sendable {
    /// Reads the catalog and streams every mapping row, ordered by (volume, chunk, birth).
    func load(mappings: (MappingRow) throws -> Void) throws -> PoolCatalog
    func commit(_ transaction: MetadataTransaction) throws
    /// The last metadata journal frame the store holds (0: none), as set by `journalApplied` commits.
    func journalApplied() throws -> UInt64
    /// Runs the store's own consistency check; returns problems found (empty when healthy).
    func integrityCheck() throws -> [String]
    func close()
}
