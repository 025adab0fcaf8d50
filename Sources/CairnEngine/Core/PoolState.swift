/// Identifies one chunk of one volume.
struct ChunkKey: Hashable {
    var volume: UInt64
    var chunk: UInt64
}

/// Metadata changed since the last commit started.
struct DirtySet {
    var chunks: Set<ChunkKey> = []
    var volumes: Set<UInt64> = []
    var deletedVolumes: [UInt64] = []
    var snapshots: [SnapshotRecord] = []
    var deletedSnapshots: [(volumeID: UInt64, name: String)] = []
    var slotFiles: [SlotFileRecord] = []
    var stores: [StoreRecord] = []

    var isEmpty: Bool {
        stores.isEmpty && chunks.isEmpty && volumes.isEmpty && deletedVolumes.isEmpty && snapshots.isEmpty
            && deletedSnapshots.isEmpty && slotFiles.isEmpty
    }
}

/// Everything the pool mutex guards.
struct PoolState {
    var volumes: [UInt64: VolumeState] = [:]
    var volumeIDs: [String: UInt64] = [:]
    var allocators: [UInt16: SlotAllocator] = [:]
    var slotFileRecords: [UInt16: SlotFileRecord] = [:]
    var stores: [String: StoreRecord] = [:]
    var dirty = DirtySet()
    /// Data was written (in place or to fresh slots) since the last commit captured: a FLUSH must
    /// fdatasync even when no metadata changed.
    var unsyncedData = false
    /// Chunks whose metadata the commit in progress is writing (not yet durable).
    var committingChunks: Set<ChunkKey> = []
    /// Slots that became unreferenced since the last commit capture.
    var pendingFrees: [SlotAddress] = []
    /// Slots whose reference count fell to one since the last commit capture: the durable metadata may
    /// still show them shared, so they are not written in place until a commit that records the drop
    /// is durable.
    var sharedUntilCommit: Set<SlotAddress> = []
    /// `sharedUntilCommit` as captured by the commit in progress.
    var sharedInCommit: Set<SlotAddress> = []
    /// The newest epoch of each volume that a metadata commit wrote. A group commit captured before a
    /// snapshot's cut, committed after the cut itself was, must not write the older epoch back.
    var committedEpochs: [UInt64: UInt32] = [:]
    var nextVolumeID: UInt64 = 1
    /// Clone groups: sources, clones, delta maps, copy-on-demand coordination.
    var cloneGroups = CloneGroupTable()
    /// Set when durability was lost (fdatasync or metadata commit failed): writes are refused from then
    /// on, because the page cache may have dropped data the disk never got.
    var failure: EngineError?
    var closed = false

    func refcount(_ slot: SlotAddress) -> UInt32 {
        allocators[slot.file]?.refcount(slot.index) ?? 0
    }

    mutating func retain(_ slot: SlotAddress) {
        allocators[slot.file]!.retain(slot.index)
    }

    mutating func release(_ slot: SlotAddress) {
        guard !slot.isNone else { return }
        let before = allocators[slot.file]!.refcount(slot.index)
        if allocators[slot.file]!.release(slot.index) {
            pendingFrees.append(slot)
        } else if before == 2 {
            sharedUntilCommit.insert(slot)
        }
    }

    mutating func markDirty(_ volume: UInt64, _ chunk: UInt64) {
        dirty.chunks.insert(ChunkKey(volume: volume, chunk: chunk))
    }

    /// True when the chunk's current mapping may not be durable yet.
    func isDirty(_ volume: UInt64, _ chunk: UInt64) -> Bool {
        let key = ChunkKey(volume: volume, chunk: chunk)
        return dirty.chunks.contains(key) || committingChunks.contains(key)
    }

    /// True when a slot may still be shared in the durable metadata.
    func mayBeDurablyShared(_ slot: SlotAddress) -> Bool {
        sharedUntilCommit.contains(slot) || sharedInCommit.contains(slot)
    }

    func volumeID(named name: String) throws -> UInt64 {
        guard let id = volumeIDs[name] else {
            throw EngineError(.notFound, "volume '\(name)' does not exist")
        }
        return id
    }
}
