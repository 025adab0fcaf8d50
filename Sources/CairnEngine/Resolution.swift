/// What the live volume reads for one chunk, and whether it may be modified in place.
struct Resolution {
    /// The version live reads see; nil reads as zeros (no version, a tombstone, or nothing in the
    /// clone's parents).
    var version: ChunkVersion?
    /// The version is the newest one in this volume's own map (not inherited from a clone parent).
    var owned: Bool
    /// Writing the version's slot in place cannot change what any snapshot, clone, dedup sharer or
    /// crash recovery sees.
    var exclusive: Bool
}

extension PoolState {
    /// Resolves chunk `chunk` of `volume` as the live volume sees it (docs/ARCHITECTURE.md, "Writing").
    func resolveLive(_ volume: VolumeState, _ chunk: UInt64) -> Resolution {
        if let list = volume.map[chunk] {
            let latest = list.latest
            if latest.isTombstone { return Resolution(version: nil, owned: true, exclusive: false) }
            let seenBySnapshot = (volume.newestSnapshotEpoch ?? 0) >= latest.birth && !volume.snapshots.isEmpty
            let shared = seenBySnapshot || refcount(latest.slot) > 1 || mayBeDurablyShared(latest.slot)
            return Resolution(version: latest, owned: true, exclusive: !shared)
        }
        return Resolution(version: inherited(volume, chunk), owned: false, exclusive: false)
    }

    /// A clone's view of a chunk it has no version of: its parent as of the clone's epoch, recursively.
    func inherited(_ volume: VolumeState, _ chunk: UInt64) -> ChunkVersion? {
        var link = volume.record.parent
        while let current = link, let parent = volumes[current.volumeID] {
            if let version = parent.map[chunk]?.visible(at: current.epoch) {
                return version.isTombstone ? nil : version
            }
            link = parent.record.parent
        }
        return nil
    }

    /// Looks up a volume by id, failing when it was deleted under a session.
    func liveVolume(_ id: UInt64) throws -> VolumeState {
        guard let volume = volumes[id] else {
            throw EngineError(.notFound, "the volume was deleted")
        }
        return volume
    }
}
