/// Where the data sub-blocks of one chunk are read from, as a reader at some epoch sees them. Sub-blocks
/// asked for that are in no piece read as zeros.
struct SubBlockSources {
    /// (slot, sub-blocks read from it); newest layer first, masks disjoint.
    var pieces: [(slot: SlotAddress, mask: UInt64)] = []

    var dataMask: UInt64 { pieces.reduce(0) { $0 | $1.mask } }

    /// The slot a single sub-block is read from, or nil when it reads as zeros.
    func slot(for bit: UInt64) -> SlotAddress? {
        pieces.first { $0.mask & bit != 0 }?.slot
    }
}

/// How the live volume may change one chunk (see docs/ARCHITECTURE.md, "Writing").
enum ChunkAccess {
    /// No version of its own (the chunk reads as zeros or from a clone's parent).
    case absent
    /// The newest own version may be changed in place: no snapshot reads it, and its slot (if any) is
    /// referenced by nothing else, now or in the last durable metadata.
    case exclusive(ChunkVersion)
    /// The newest own version must stay as it is: a snapshot reads it, or its slot is shared.
    case shared(ChunkVersion)
}

extension PoolState {
    /// Classifies the newest own version of a chunk of the live volume.
    func access(_ volume: VolumeState, _ chunk: UInt64) -> ChunkAccess {
        guard let latest = volume.map[chunk]?.latest else { return .absent }
        if let newest = volume.newestSnapshotEpoch, newest >= latest.birth { return .shared(latest) }
        if latest.hasSlot && (refcount(latest.slot) > 1 || mayBeDurablyShared(latest.slot)) {
            return .shared(latest)
        }
        return .exclusive(latest)
    }

    /// True when a new version of `chunk` would have something below it to fall through to: an
    /// older own version, or a clone parent.
    func hasUnderneath(_ volume: VolumeState, _ chunk: UInt64) -> Bool {
        volume.map[chunk] != nil || volume.record.parent != nil
    }

    /// Resolves the `wanted` sub-blocks of `chunk` for a reader of `volume` at `epoch` (`UInt32.max`:
    /// the live volume): each sub-block comes from the newest version at or before `epoch` that defines
    /// it, then from the clone parent at its snapshot epoch, recursively; undefined everywhere is zero.
    func resolve(_ volume: VolumeState, _ chunk: UInt64, epoch: UInt32 = .max, wanted: UInt64) -> SubBlockSources {
        var sources = SubBlockSources()
        var remaining = wanted
        var current: VolumeState? = volume
        var limit = epoch
        while let layer = current, remaining != 0 {
            if let list = layer.map[chunk] {
                // Fast path: one version (almost every chunk).
                if case .one(let version) = list {
                    if version.birth <= limit { take(version, &remaining, &sources) }
                } else {
                    for version in list.versions.reversed() where version.birth <= limit {
                        take(version, &remaining, &sources)
                        if remaining == 0 { break }
                    }
                }
            }
            guard let link = layer.record.parent else { break }
            current = volumes[link.volumeID]
            limit = link.epoch
        }
        return sources
    }

    @inline(__always)
    private func take(_ version: ChunkVersion, _ remaining: inout UInt64, _ sources: inout SubBlockSources) {
        let decided = remaining & version.definedMask
        guard decided != 0 else { return }
        let data = decided & version.dataMask
        if data != 0 { sources.pieces.append((version.slot, data)) }
        remaining &= ~decided
    }

    /// Looks up a volume by id, failing when it was deleted under a session.
    func liveVolume(_ id: UInt64) throws -> VolumeState {
        guard let volume = volumes[id], !volume.deleting else {
            throw EngineError(.notFound, "the volume was deleted")
        }
        return volume
    }

    func volume(named name: String) throws -> VolumeState {
        volumes[try volumeID(named: name)]!
    }
}

extension Pool {
    /// A live volume's size (monitor held). Here rather than in `VolumeCatalog`: reached through another
    /// object, `pool.state` is copied whole (every field retained and released) for one method call, and
    /// iSCSI asks for the size on every command.
    func liveVolumeSize(_ id: UInt64) throws -> UInt64 {
        guard let volume = state.volumes[id], !volume.deleting else {
            throw EngineError(.notFound, "the volume was deleted")
        }
        return volume.record.size
    }
}
