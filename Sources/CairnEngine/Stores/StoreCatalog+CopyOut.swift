import CairnIO
import Logging
import Synchronization

/// A chunk whose snapshot-held version moves to the preserve store before the live volume overwrites
/// it in place.
private struct CopyOut {
    var chunk: UInt64
    var version: ChunkVersion
    var preserved: SlotAddress
}

extension StoreCatalog {
    /// The COW-offload design's copy-on-write with a LUN map, for volumes that have a preserve store: on the first
    /// write to a chunk a snapshot still reads, the engine copies the old data to the preserve store
    /// (another disk), points the snapshot's version there, commits that durably, and only then lets the
    /// live volume overwrite its own slot in place. The host sends one write and never sees where the old
    /// data went; live data stays on the pool's disk.
    ///
    /// The commit before the overwrite is what keeps the snapshot intact across a crash: until it is
    /// durable, the metadata on disk still says the snapshot reads the live slot.
    func copyOutBeforeWrite(volumeID: UInt64, offset: UInt64, length: UInt64) throws {
        // Most pools never configure a preserve store: skip the mutex entirely then.
        guard inUse.load(ordering: .relaxed) else { return }
        let (end, overflow) = offset.addingReportingOverflow(length)
        guard !overflow, length > 0 else { return }
        let planned = try pool.monitor.withLock {
            () -> (work: [CopyOut], files: [UInt16: any StorageFile], geometry: ChunkGeometry)? in
            while true {
                try pool.checkWritable()
                let volume = try pool.state.liveVolume(volumeID)
                guard let store = volume.record.preserveStore, pool.state.stores[store] != nil,
                    let newest = volume.newestSnapshotEpoch
                else { return nil }
                let g = volume.geometry
                var candidates: [(UInt64, ChunkVersion)] = []
                for chunk in g.chunk(containing: offset)...g.chunk(containing: end - 1) {
                    guard let v = volume.map[chunk]?.latest, v.birth <= newest, v.hasSlot, v.slot.file == volume.slotFile,
                        pool.state.refcount(v.slot) == 1, !pool.state.mayBeDurablyShared(v.slot)
                    else { continue }
                    candidates.append((chunk, v))
                }
                guard !candidates.isEmpty else { return nil }
                if volume.epochChangePending || !candidates.allSatisfy({ volume.locks.isAvailable($0.0, exclusive: true) }) {
                    pool.monitor.wait()
                    continue
                }
                let preserveFile = try pool.slotFile(forChunkSize: g.chunkSize, store: store)
                try pool.checkSpace(forChunks: candidates.count, chunkSize: g.chunkSize)
                let work = candidates.map { chunk, version in
                    CopyOut(chunk: chunk, version: version, preserved: pool.state.allocators[preserveFile]!.allocate())
                }
                for item in work { volume.locks.acquire(item.chunk, exclusive: true) }
                volume.writesInFlight += 1
                return (work, pool.files, g)
            }
        }
        guard let (work, slotFiles, g) = planned else { return }
        let sub = UInt64(g.subBlockSize)
        var failure: (any Error)?
        do {
            for item in work {
                try item.version.dataMask.forEachRun { first, count in
                    let delta = UInt64(first) * sub
                    try slotFiles[item.preserved.file]!.copy(
                        from: slotFiles[item.version.slot.file]!, at: item.version.slot.index * UInt64(g.chunkSize) + delta,
                        to: item.preserved.index * UInt64(g.chunkSize) + delta, length: UInt64(count) * sub)
                }
            }
        } catch {
            failure = error
        }
        pool.monitor.withLock {
            guard let volume = pool.state.volumes[volumeID] else {
                for item in work { pool.state.allocators[item.preserved.file]?.abandon(item.preserved.index) }
                return
            }
            pool.state.unsyncedData = true
            for item in work {
                volume.locks.release(item.chunk, exclusive: true)
                guard failure == nil else {
                    pool.state.allocators[item.preserved.file]!.abandon(item.preserved.index)
                    continue
                }
                // The snapshot's version now reads the preserved copy; a new live version owns the pool slot
                // (same data for now; the write that follows lands in it in place).
                var list = volume.map[item.chunk]!
                var preserved = item.version
                preserved.slot = item.preserved
                list.replaceLatest(with: preserved)
                list.append(
                    ChunkVersion(
                        birth: volume.epoch, slot: item.version.slot, dataMask: item.version.dataMask,
                        definedMask: item.version.definedMask))
                volume.setVersions(item.chunk, list)
                pool.state.markDirty(volumeID, item.chunk)
            }
            volume.writesInFlight -= 1
        }
        pool.monitor.broadcast()
        if let failure { throw EngineError.io("copying preserved data to the preserve store", failure) }
        try pool.flush()
        pool.logger.debug("copied out", metadata: ["chunks": "\(work.count)"])
    }
}
