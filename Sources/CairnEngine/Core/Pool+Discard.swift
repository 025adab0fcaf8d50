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

/// A chunk that keeps some data after a discard: the cleared sub-blocks are punched out of its own
/// slot (exclusive version), or the rest is copied into a fresh slot (replace).
private struct ChunkDiscard {
    var chunk: UInt64
    var old: ChunkVersion
    var result: ChunkVersion
    var clear: UInt64
    /// True when `result` lives in a fresh slot that the kept data is copied into.
    var copies: Bool { result.slot != old.slot }
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
        // A discard changes content like a write: same clone-group treatment (CloneGroups/CloneGroups+IO.swift).
        let ticket = try cloneGroups.beforeWrite(volumeID: volumeID, offset: offset, length: length, fua: fua)
        defer { cloneGroups.afterWrite(ticket) }
        try discard(volumeID: volumeID, offset: offset, length: length, mode: mode, fua: fua, limit: nil)
        if try cloneGroups.mirror(ticket, offset: offset, fua: fua, { clone in
            try discard(volumeID: clone, offset: offset, length: length, mode: mode, fua: false, limit: nil)
        }) {
            try flush()
        }
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
    func candidateChunks(_ volume: VolumeState, from first: UInt64, through last: UInt64, limit: Int)
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
        // Plan under the mutex. Most cases change the map only and are applied right here; chunks that
        // keep data and need I/O stay locked exclusive until it is done.
        let (work, slotFiles) = try monitor.withLock { () -> ([ChunkDiscard], [UInt16: any StorageFile]) in
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
                    if let item = try planDiscard(volume, chunk, clear: clear) {
                        volume.locks.acquire(chunk, exclusive: true)
                        work.append(item)
                    }
                }
                if !work.isEmpty { volume.writesInFlight += 1 }
                return (work, files)
            }
        }
        guard !work.isEmpty else { return }
        var failure: (any Error)?
        let chunkBytes = UInt64(g.chunkSize)
        let sub = UInt64(g.subBlockSize)
        do {
            for item in work {
                if item.copies {
                    try item.result.dataMask.forEachRun { first, count in
                        let delta = UInt64(first) * sub
                        try slotFiles[item.result.slot.file]!.copy(
                            from: slotFiles[item.old.slot.file]!, at: item.old.slot.index * chunkBytes + delta,
                            to: item.result.slot.index * chunkBytes + delta, length: UInt64(count) * sub)
                    }
                } else {
                    try (item.clear & item.old.dataMask).forEachRun { first, count in
                        try slotFiles[item.old.slot.file]!.punchHole(
                            at: item.old.slot.index * chunkBytes + UInt64(first) * sub, length: UInt64(count) * sub)
                    }
                }
            }
        } catch {
            failure = error
        }
        monitor.withLock {
            guard let volume = state.volumes[id] else {
                for item in work where item.copies {
                    state.allocators[item.result.slot.file]?.abandon(item.result.slot.index)
                }
                return
            }
            state.unsyncedData = true
            for item in work {
                volume.locks.release(item.chunk, exclusive: true)
                if failure == nil {
                    replaceLatest(item.result, volume: volume, chunk: item.chunk)
                } else if item.copies {
                    state.allocators[item.result.slot.file]!.abandon(item.result.slot.index)
                }
            }
            volume.writesInFlight -= 1
        }
        monitor.broadcast()
        if let failure { throw EngineError.io("discarding volume data", failure) }
    }

    /// Makes the live volume read `clear` of `chunk` as zeros (monitor held, chunk not locked by anyone).
    /// Applies map-only changes directly; returns the I/O to do for the rest.
    private func planDiscard(_ volume: VolumeState, _ chunk: UInt64, clear: UInt64) throws -> ChunkDiscard? {
        guard clear != 0, state.resolve(volume, chunk, wanted: clear).dataMask != 0 else { return nil }
        let underneath = (volume.map[chunk]?.count ?? 0) > 1 || volume.record.parent != nil
        switch state.access(volume, chunk) {
        case .exclusive(let v):
            var next = v
            next.dataMask &= ~clear
            // With nothing below, an undefined sub-block already reads as zeros.
            if underneath { next.definedMask |= clear }
            if next.dataMask == 0 {
                if !underneath {
                    dropLatest(volume: volume, chunk: chunk)
                } else {
                    next.slot = .none
                    replaceLatest(next, volume: volume, chunk: chunk)
                }
                return nil
            }
            return ChunkDiscard(chunk: chunk, old: v, result: next, clear: clear)
        case .shared(let v) where v.birth == volume.epoch:
            // Born in this epoch but sharing its slot: keep the rest in a copy, replacing it.
            var next = v
            next.dataMask &= ~clear
            next.definedMask |= clear
            if next.dataMask == 0 {
                next.slot = .none
                replaceLatest(next, volume: volume, chunk: chunk)
                return nil
            }
            try checkSpace(forChunks: 1, chunkSize: volume.geometry.chunkSize)
            next.slot = state.allocators[volume.slotFile]!.allocate()
            return ChunkDiscard(chunk: chunk, old: v, result: next, clear: clear)
        case .shared, .absent:
            // A snapshot (or a clone's parent) still reads what is there: hide it with zeros on top.
            appendVersion(.zeros(birth: volume.epoch, defining: clear), volume: volume, chunk: chunk)
            return nil
        }
    }
}
