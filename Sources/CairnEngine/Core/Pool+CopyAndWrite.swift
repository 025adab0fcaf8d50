import CairnIO

extension Pool {
    /// COPY_AND_WRITE: the chunk at `target` becomes a copy of the chunk at `source`, modified
    /// by `buffer` placed `bufferOffset` bytes into it. Only the buffer crosses the interface; the copy
    /// happens inside the engine (reflink or `copy_file_range` where the platform allows), and the
    /// chunk's new version is born in the current epoch, so the map records that it needs no further
    /// copy-on-write.
    ///
    /// - Parameters:
    ///   - source: byte offset of the chunk to copy (chunk-aligned).
    ///   - target: byte offset of the chunk to create (chunk-aligned).
    ///   - copySize: the copy-on-write chunk size; must be the volume's chunk size.
    ///   - buffer: the write that precipitated the copy.
    ///   - bufferOffset: where the buffer goes inside the chunk.
    public func copyAndWrite(
        volumeID: UInt64, source: UInt64, target: UInt64, copySize: UInt32, buffer: UnsafeRawBufferPointer,
        bufferOffset: UInt32, fua: Bool
    ) throws {
        // In a clone group the source chunk is read like a host read (copied on demand first during a
        // protected restore) and the target chunk is written like a host write, then mirrored.
        guard try cloneGroups.readTarget(volumeID: volumeID, offset: source, length: UInt64(copySize)) == volumeID else {
            throw EngineError(
                .busy, "COPY_AND_WRITE is not available while a reverse sync runs into this volume; use WRITE")
        }
        let ticket = try cloneGroups.beforeWrite(
            volumeID: volumeID, offset: target, length: UInt64(copySize), fua: fua)
        defer { cloneGroups.afterWrite(ticket) }
        try copyAndWriteChunk(
            volumeID: volumeID, source: source, target: target, copySize: copySize, buffer: buffer,
            bufferOffset: bufferOffset, fua: fua)
        if try cloneGroups.mirror(ticket, offset: target, fua: fua, { clone in
            try copyRange(from: volumeID, to: clone, offset: target, length: UInt64(copySize))
        }) {
            try flush()
        }
    }

    /// COPY_AND_WRITE itself, inside one volume.
    func copyAndWriteChunk(
        volumeID: UInt64, source: UInt64, target: UInt64, copySize: UInt32, buffer: UnsafeRawBufferPointer,
        bufferOffset: UInt32, fua: Bool
    ) throws {
        let (plan, sourceLock) = try monitor.withLock { () -> (WritePlan, UInt64?) in
            while true {
                try checkWritable()
                let volume = try state.liveVolume(volumeID)
                let g = volume.geometry
                guard copySize == g.chunkSize else {
                    throw EngineError(
                        .invalidArgument,
                        "COPY_AND_WRITE copies whole chunks: the copy size must be \(g.chunkSize), not \(copySize)")
                }
                guard source % UInt64(g.chunkSize) == 0, target % UInt64(g.chunkSize) == 0 else {
                    throw EngineError(.invalidArgument, "COPY_AND_WRITE source and target must be chunk-aligned")
                }
                try Self.checkBounds(volume, offset: source, length: UInt64(copySize))
                try Self.checkBounds(volume, offset: target, length: UInt64(copySize))
                guard UInt64(bufferOffset) + UInt64(buffer.count) <= UInt64(copySize), !buffer.isEmpty else {
                    throw EngineError(.invalidArgument, "COPY_AND_WRITE buffer does not fit inside the chunk")
                }
                if volume.epochChangePending {
                    monitor.wait()
                    continue
                }
                let sourceChunk = g.chunk(containing: source)
                let targetChunk = g.chunk(containing: target)
                let sourceLock: UInt64? = sourceChunk != targetChunk && volume.map[sourceChunk] != nil ? sourceChunk : nil
                guard volume.locks.isAvailable(targetChunk, exclusive: true),
                    sourceLock.map({ volume.locks.isAvailable($0, exclusive: false) }) ?? true
                else {
                    monitor.wait()
                    continue
                }
                let from = bufferOffset
                let to = bufferOffset + UInt32(buffer.count)
                let touched = g.touchedMask(from: from, to: to)
                let covered = g.coveredMask(from: from, to: to)
                let sources = state.resolve(volume, sourceChunk, wanted: g.fullMask)
                try checkSpace(forChunks: 1, chunkSize: g.chunkSize)
                let slot = state.allocators[volume.slotFile]!.allocate()
                // The new version defines the whole chunk: what the source holds, then the buffer.
                let copied = sources.dataMask & ~covered
                let kind: ChunkWrite.Kind
                switch state.access(volume, targetChunk) {
                case .exclusive: kind = .replace
                case .shared(let v) where v.birth == volume.epoch: kind = .replace
                case .shared, .absent: kind = .newVersion
                }
                var chunk = ChunkWrite(
                    chunk: targetChunk, kind: kind, segment: from..<to, requestOffset: 0,
                    result: ChunkVersion(birth: volume.epoch, slot: slot, dataMask: copied | touched, definedMask: g.fullMask))
                chunk.freshSlot = true
                chunk.fills = sources.pieces.compactMap { piece in
                    let mask = piece.mask & ~covered
                    return mask == 0 ? nil : (piece.slot, mask)
                }
                let sub = g.subBlockSize
                chunk.padHead = from % sub != 0 && copied & (UInt64(1) << UInt64(from / sub)) == 0
                chunk.padTail = to % sub != 0 && copied & (UInt64(1) << UInt64(to / sub)) == 0
                volume.locks.acquire(targetChunk, exclusive: true)
                if let sourceLock { volume.locks.acquire(sourceLock, exclusive: false) }
                volume.writesInFlight += 1
                var plan = WritePlan(volumeID: volumeID, geometry: g, files: files)
                plan.chunks = [chunk]
                plan.durableDataWriteSuffices = false
                return (plan, sourceLock)
            }
        }
        var failure: (any Error)?
        do {
            try execute(plan, source: .bytes(buffer), durable: false)
        } catch {
            failure = error
        }
        if let sourceLock {
            monitor.withLock { state.volumes[volumeID]?.locks.release(sourceLock, exclusive: false) }
        }
        finishWrite(plan, succeeded: failure == nil)
        if let failure { throw EngineError.io("COPY_AND_WRITE", failure) }
        if fua { try flush() }
    }

    static let maximumSharingSpan: UInt64 = 1 << 30

    /// Whether a write to each chunk in `[offset, offset + length)` would copy (the chunk is shared with a
    /// snapshot, a clone's parent or a dedup twin): what a host-side mapping layer needs to know before
    /// it decides to call COPY_AND_WRITE. Returns (offset, length, shared) runs.
    public func sharingExtents(volumeID: UInt64, offset: UInt64, length: UInt64) throws
        -> [(offset: UInt64, length: UInt64, shared: Bool)]
    {
        try monitor.withLock {
            let volume = try state.liveVolume(volumeID)
            guard offset < volume.record.size else {
                throw EngineError(.outOfRange, "offset \(offset) is past the end of the volume")
            }
            let g = volume.geometry
            // At most a gigabyte per answer: clients ask again from where it stopped.
            let end = min(volume.record.size, offset + min(length, Self.maximumSharingSpan))
            var result: [(offset: UInt64, length: UInt64, shared: Bool)] = []
            var position = offset
            while position < end && result.count < SnapshotCatalog.maximumAllocationExtents {
                let chunk = g.chunk(containing: position)
                let chunkEnd = min(end, g.start(of: chunk) + UInt64(g.chunkSize))
                let shared: Bool
                switch state.access(volume, chunk) {
                case .exclusive: shared = false
                case .shared: shared = true
                case .absent: shared = volume.record.parent != nil && state.resolve(volume, chunk, wanted: g.fullMask).dataMask != 0
                }
                if let last = result.last, last.shared == shared {
                    result[result.count - 1].length += chunkEnd - position
                } else {
                    result.append((position, chunkEnd - position, shared))
                }
                position = chunkEnd
            }
            return result
        }
    }
}
