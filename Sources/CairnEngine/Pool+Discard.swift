import CairnIO

/// How a discard treats the range.
public enum DiscardMode: Sendable, Hashable {
    /// NBD TRIM: whole sub-blocks in the range are deallocated; the partial sub-blocks at its edges are
    /// left alone (TRIM is advisory, and a 512-byte TRIM cannot free a 4 KiB sub-block).
    case trim
    /// NBD WRITE_ZEROES without NO_HOLE: the whole range reads as zeros afterwards; whole sub-blocks are
    /// deallocated, partial edges are written with zeros.
    case zero
}

/// A chunk whose mask shrinks but keeps some data: the cleared sub-blocks are punched in place
/// (exclusive version) or the rest is copied into a fresh slot (shared version).
private struct ChunkDiscard {
    var chunk: UInt64
    var slot: SlotAddress
    var clearMask: UInt64
    var newMask: UInt64
    /// Fresh slot when the version is shared; `.none` when punching in place.
    var target: SlotAddress = .none
}

extension Pool {
    /// Chunks handled per pass under the pool mutex, so that discarding a terabyte neither holds the
    /// mutex for long nor takes millions of chunk locks at once.
    static let discardBatchChunks = 256

    /// Deallocates (TRIM) or zeroes (WRITE_ZEROES) a range of the live volume. Snapshots keep seeing
    /// their data: a chunk a snapshot sees gets a tombstone or a new version instead of being freed.
    public func discard(volumeID: UInt64, offset: UInt64, length: UInt64, mode: DiscardMode, fua: Bool = false)
        throws
    {
        try discard(volumeID: volumeID, offset: offset, length: length, mode: mode, fua: fua, limit: nil)
    }

    /// `limit` replaces the volume size in bounds checks (shrinking discards past the new size).
    func discard(volumeID: UInt64, offset: UInt64, length: UInt64, mode: DiscardMode, fua: Bool, limit: UInt64?)
        throws
    {
        guard length > 0 else { return }
        let geometry = try monitor.withLock { () -> ChunkGeometry in
            try checkWritable()
            let volume = try state.liveVolume(volumeID)
            try Self.checkBounds(volume, offset: offset, length: length, end: limit)
            return volume.geometry
        }
        let sub = UInt64(geometry.subBlockSize)
        let end = offset + length
        let alignedStart = (offset + sub - 1) / sub * sub
        let alignedEnd = end / sub * sub
        let hasWholeSubBlocks = alignedEnd > alignedStart
        if mode == .zero {
            // Partial sub-blocks at the edges must read as zeros too: write zeros there (allocating
            // only when the sub-block already holds data or the write is not sub-block aligned).
            if !hasWholeSubBlocks {
                try write(volumeID: volumeID, offset: offset, source: .zeros(length: length), fua: false, end: limit)
            } else {
                if alignedStart > offset {
                    try write(
                        volumeID: volumeID, offset: offset, source: .zeros(length: alignedStart - offset), fua: false,
                        end: limit)
                }
                if end > alignedEnd {
                    try write(
                        volumeID: volumeID, offset: alignedEnd, source: .zeros(length: end - alignedEnd), fua: false,
                        end: limit)
                }
            }
        }
        if hasWholeSubBlocks {
            try deallocate(volumeID: volumeID, from: alignedStart, to: alignedEnd, geometry: geometry)
        }
        if fua { try flush() }
    }

    /// Clears every sub-block of `[from, to)` (sub-block aligned), batch by batch.
    private func deallocate(volumeID: UInt64, from: UInt64, to: UInt64, geometry g: ChunkGeometry) throws {
        var cursor = g.chunk(containing: from)
        let lastChunk = g.chunk(containing: to - 1)
        while cursor <= lastChunk {
            let batch = try monitor.withLock { () -> [UInt64] in
                let volume = try state.liveVolume(volumeID)
                return candidateChunks(volume, from: cursor, through: lastChunk, limit: Self.discardBatchChunks)
            }
            guard let last = batch.last else { break }
            try deallocateBatch(volumeID: volumeID, chunks: batch, from: from, to: to, geometry: g)
            cursor = last + 1
        }
    }

    /// Chunks in `[first, last]` that may hold data for this volume: its own and its parents' mapped
    /// chunks (monitor held).
    private func candidateChunks(_ volume: VolumeState, from first: UInt64, through last: UInt64, limit: Int)
        -> [UInt64]
    {
        var indexes = [volume.present]
        var link = volume.record.parent
        while let current = link, let parent = state.volumes[current.volumeID] {
            indexes.append(parent.present)
            link = parent.record.parent
        }
        var result: [UInt64] = []
        var cursor = first
        while result.count < limit {
            let next = indexes.compactMap { $0.next(atOrAfter: cursor) }.min()
            guard let next, next <= last else { break }
            result.append(next)
            cursor = next + 1
        }
        return result
    }

    private func deallocateBatch(volumeID id: UInt64, chunks: [UInt64], from: UInt64, to: UInt64,
        geometry g: ChunkGeometry) throws
    {
        // Plan under the mutex: chunks that lose all their data change map-only, right here; chunks
        // that keep some data need I/O and stay locked exclusive until it is done.
        let (work, file) = try monitor.withLock { () -> ([ChunkDiscard], any StorageFile) in
            while true {
                try checkWritable()
                let volume = try state.liveVolume(id)
                if volume.epochChangePending || !chunks.allSatisfy({ volume.locks.isAvailable($0, exclusive: true) }) {
                    monitor.wait()
                    continue
                }
                var work: [ChunkDiscard] = []
                for chunk in chunks {
                    let chunkStart = g.start(of: chunk)
                    let lower = UInt32(max(from, chunkStart) - chunkStart)
                    let upper = UInt32(min(to, chunkStart + UInt64(g.chunkSize)) - chunkStart)
                    let clear = g.coveredMask(from: lower, to: upper)
                    let resolution = state.resolveLive(state.volumes[id]!, chunk)
                    guard let version = resolution.version, version.mask & clear != 0 else { continue }
                    let remaining = version.mask & ~clear
                    if remaining == 0 {
                        dropLiveData(volumeID: id, chunk: chunk, owned: resolution.owned)
                        continue
                    }
                    var item = ChunkDiscard(chunk: chunk, slot: version.slot, clearMask: clear, newMask: remaining)
                    if !resolution.exclusive {
                        item.target = state.allocators[state.volumes[id]!.slotFile]!.allocate()
                    }
                    state.volumes[id]!.locks.acquire(chunk, exclusive: true)
                    work.append(item)
                }
                if !work.isEmpty { state.volumes[id]!.writesInFlight += 1 }
                return (work, files[state.volumes[id]!.slotFile]!)
            }
        }
        guard !work.isEmpty else { return }
        var failure: (any Error)?
        let chunkBytes = UInt64(g.chunkSize)
        let sub = UInt64(g.subBlockSize)
        do {
            for item in work {
                if item.target.isNone {
                    try item.clearMask.forEachRun { first, count in
                        try file.punchHole(
                            at: item.slot.index * chunkBytes + UInt64(first) * sub, length: UInt64(count) * sub)
                    }
                } else {
                    try item.newMask.forEachRun { first, count in
                        let delta = UInt64(first) * sub
                        try file.copy(
                            from: file, at: item.slot.index * chunkBytes + delta,
                            to: item.target.index * chunkBytes + delta, length: UInt64(count) * sub)
                    }
                }
            }
        } catch {
            failure = error
        }
        monitor.withLock {
            guard state.volumes[id] != nil else {
                for item in work where !item.target.isNone {
                    state.allocators[item.target.file]?.abandon(item.target.index)
                }
                return
            }
            let epoch = state.volumes[id]!.epoch
            state.unsyncedData = true
            for item in work {
                state.volumes[id]!.locks.release(item.chunk, exclusive: true)
                if failure != nil {
                    if !item.target.isNone { state.allocators[item.target.file]!.abandon(item.target.index) }
                    continue
                }
                if item.target.isNone {
                    var list = state.volumes[id]!.map[item.chunk]!
                    var latest = list.latest
                    latest.mask = item.newMask
                    list.replaceLatest(with: latest)
                    state.volumes[id]!.setVersions(item.chunk, list)
                    state.markDirty(id, item.chunk)
                } else {
                    installVersion(
                        ChunkVersion(birth: epoch, slot: item.target, mask: item.newMask), volumeID: id,
                        chunk: item.chunk)
                }
            }
            state.volumes[id]!.writesInFlight -= 1
        }
        monitor.broadcast()
        if let failure { throw EngineError.io("discarding volume data", failure) }
    }

    /// The live volume stops seeing any data in `chunk` (monitor held, chunk not locked by others).
    /// The newest version goes away when nothing would show through it; otherwise a tombstone hides
    /// what is underneath (older versions kept for snapshots, or a clone's parent).
    func dropLiveData(volumeID id: UInt64, chunk: UInt64, owned: Bool) {
        let volume = state.volumes[id]!
        let tombstone = ChunkVersion.tombstone(birth: volume.epoch)
        guard owned, let list = volume.map[chunk] else {
            state.volumes[id]!.setVersions(chunk, .one(tombstone))
            state.markDirty(id, chunk)
            return
        }
        let somethingUnderneath = list.count > 1 || volume.record.parent != nil
        if !somethingUnderneath && !volume.isVisibleToSnapshot(list, index: 0) {
            state.release(list.latest.slot)
            state.volumes[id]!.setVersions(chunk, nil)
        } else {
            installVersion(tombstone, volumeID: id, chunk: chunk)
        }
        state.markDirty(id, chunk)
    }
}
