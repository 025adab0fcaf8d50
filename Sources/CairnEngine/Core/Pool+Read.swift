import CairnIO

/// A piece of a read result: data that came from a slot, or a range that reads as zeros because
/// nothing is allocated there (sent as NBD OFFSET_HOLE).
public struct ReadExtent: Sendable, Hashable {
    /// Offset in the volume.
    public var offset: UInt64
    public var length: UInt64
    public var isHole: Bool

    public init(offset: UInt64, length: UInt64, isHole: Bool) {
        self.offset = offset
        self.length = length
        self.isHole = isHole
    }
}

/// One positional read from a slot file into the caller's buffer.
private struct SlotRead {
    var file: UInt16
    var fileOffset: UInt64
    var bufferOffset: Int
    var length: Int
}

extension Pool {
    /// Reads `buffer.count` bytes at `offset` into `buffer`: of the live volume, or of its snapshot at
    /// `snapshotEpoch`. Returns the data and hole extents in order; holes are zero-filled in `buffer`.
    public func read(
        volumeID: UInt64, snapshotEpoch: UInt32? = nil, offset: UInt64, into buffer: UnsafeMutableRawBufferPointer
    ) throws -> [ReadExtent] {
        // A source being restored from a clone reads through its clone group (copy on demand, or the clone).
        let target =
            snapshotEpoch == nil
            ? try cloneGroups.readTarget(volumeID: volumeID, offset: offset, length: UInt64(buffer.count)) : volumeID
        return try read(volumeID: target, snapshotEpoch: snapshotEpoch, offset: offset, into: buffer, mayBlock: true)!
    }

    /// A read of a volume's own data, bypassing clone-group routing: what the sync and COD engines copy.
    func readVolumeData(volumeID: UInt64, offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws
        -> [ReadExtent]
    {
        try read(volumeID: volumeID, snapshotEpoch: nil, offset: offset, into: buffer, mayBlock: true)!
    }

    /// The same read if it can be done without blocking: no chunk lock to wait for, and every byte in the
    /// page cache (RWF_NOWAIT). Returns nil otherwise, having changed nothing. This is what lets a read of
    /// hot data be answered on the network event loop without a trip through the I/O threads.
    public func readIfCached(
        volumeID: UInt64, snapshotEpoch: UInt32? = nil, offset: UInt64, into buffer: UnsafeMutableRawBufferPointer
    ) throws -> [ReadExtent]? {
        if snapshotEpoch == nil
            && cloneGroups.routesReads(volumeID: volumeID, offset: offset, length: UInt64(buffer.count))
        {
            return nil
        }
        return try read(volumeID: volumeID, snapshotEpoch: snapshotEpoch, offset: offset, into: buffer, mayBlock: false)
    }

    private func read(
        volumeID: UInt64, snapshotEpoch: UInt32?, offset: UInt64, into buffer: UnsafeMutableRawBufferPointer,
        mayBlock: Bool
    ) throws -> [ReadExtent]? {
        guard !buffer.isEmpty else { return [] }
        let length = UInt64(buffer.count)
        var reads: [SlotRead] = []
        var extents: [ReadExtent] = []
        var locked: [UInt64] = []
        let planned = try monitor.withLock { () -> [UInt16: any StorageFile]? in
            while true {
                if state.closed { throw EngineError(.closed, "the pool is closed") }
                let volume = try state.liveVolume(volumeID)
                if let snapshotEpoch {
                    // Every version a snapshot reads is immutable until the snapshot is deleted, and a
                    // snapshot with readers attached cannot be deleted: no chunk locks needed.
                    let snapshot = try volume.snapshot(atEpoch: snapshotEpoch)
                    try Self.checkBounds(volume, offset: offset, length: length, end: snapshot.size)
                    planRead(volume, epoch: snapshotEpoch, offset: offset, length: length, reads: &reads, extents: &extents)
                    return files
                }
                try Self.checkBounds(volume, offset: offset, length: length)
                // Own, mapped chunks are read under a shared chunk lock so that nothing can remap or
                // free their slot mid-read; inherited versions are pinned by the parent's snapshot.
                let g = volume.geometry
                let firstChunk = g.chunk(containing: offset)
                let lastChunk = g.chunk(containing: offset + length - 1)
                locked = volume.present.chunks(in: firstChunk..<(lastChunk + 1))
                if volume.readsBlocked || !locked.allSatisfy({ volume.locks.isAvailable($0, exclusive: false) }) {
                    guard mayBlock else { return nil }
                    monitor.wait()
                    continue
                }
                for chunk in locked { volume.locks.acquire(chunk, exclusive: false) }
                planRead(volume, epoch: .max, offset: offset, length: length, reads: &reads, extents: &extents)
                return files
            }
        }
        guard let slotFiles = planned else { return nil }
        defer {
            monitor.withLock {
                if let volume = state.volumes[volumeID] {
                    for chunk in locked { volume.locks.release(chunk, exclusive: false) }
                }
            }
            if !locked.isEmpty { monitor.broadcast() }
        }
        do {
            for read in reads {
                let target = UnsafeMutableRawBufferPointer(
                    rebasing: buffer[read.bufferOffset..<(read.bufferOffset + read.length)])
                if mayBlock {
                    try slotFiles[read.file]!.read(into: target, at: read.fileOffset)
                } else if try !slotFiles[read.file]!.readIfCached(into: target, at: read.fileOffset) {
                    return nil
                }
            }
        } catch let mismatch as ChecksumMismatch {
            // Find the read that hit it, to name the damaged block's offset in the volume.
            let read = reads.first {
                mismatch.fileOffset + ChecksumLayout.blockSize > $0.fileOffset
                    && mismatch.fileOffset < $0.fileOffset + UInt64($0.length)
            }
            let volumeOffset = read.map { offset + UInt64($0.bufferOffset) + max(mismatch.fileOffset, $0.fileOffset) - $0.fileOffset } ?? offset
            throw checksumFailure(
                mismatch, volumeID: volumeID, snapshotEpoch: snapshotEpoch, volumeOffset: volumeOffset,
                file: read?.file ?? 0)
        } catch {
            throw EngineError.io("reading volume data", error)
        }
        for extent in extents where extent.isHole {
            let start = Int(extent.offset - offset)
            UnsafeMutableRawBufferPointer(rebasing: buffer[start..<(start + Int(extent.length))])
                .initializeMemory(as: UInt8.self, repeating: 0)
        }
        return extents
    }

    /// Builds the slot reads (coalesced when slots are consecutive) and the extent list (monitor held).
    private func planRead(
        _ volume: VolumeState, epoch: UInt32, offset: UInt64, length: UInt64, reads: inout [SlotRead],
        extents: inout [ReadExtent]
    ) {
        let g = volume.geometry
        let sub = UInt64(g.subBlockSize)
        let end = offset + length
        var position = offset
        func add(_ extent: ReadExtent) {
            if let last = extents.last, last.isHole == extent.isHole, last.offset + last.length == extent.offset {
                extents[extents.count - 1].length += extent.length
            } else {
                extents.append(extent)
            }
        }
        while position < end {
            let chunk = g.chunk(containing: position)
            let chunkStart = g.start(of: chunk)
            let chunkEnd = min(chunkStart + UInt64(g.chunkSize), end)
            let touched = g.touchedMask(from: UInt32(position - chunkStart), to: UInt32(chunkEnd - chunkStart))
            let sources = state.resolve(volume, chunk, epoch: epoch, wanted: touched)
            guard !sources.pieces.isEmpty else {
                add(ReadExtent(offset: position, length: chunkEnd - position, isHole: true))
                position = chunkEnd
                continue
            }
            // Walk runs of sub-blocks read from the same slot (or all zeros) inside [position, chunkEnd).
            func source(at offset: UInt64) -> SlotAddress? {
                sources.slot(for: UInt64(1) << ((offset - chunkStart) / sub))
            }
            while position < chunkEnd {
                let slot = source(at: position)
                var runEnd = (position - chunkStart) / sub * sub + sub + chunkStart
                while runEnd < chunkEnd && source(at: runEnd) == slot { runEnd += sub }
                runEnd = min(runEnd, chunkEnd)
                add(ReadExtent(offset: position, length: runEnd - position, isHole: slot == nil))
                if let slot {
                    let fileOffset = slot.index * UInt64(g.chunkSize) + (position - chunkStart)
                    let bufferOffset = Int(position - offset)
                    let count = Int(runEnd - position)
                    if let last = reads.last, last.file == slot.file,
                        last.fileOffset + UInt64(last.length) == fileOffset, last.bufferOffset + last.length == bufferOffset
                    {
                        reads[reads.count - 1].length += count
                    } else {
                        reads.append(
                            SlotRead(file: slot.file, fileOffset: fileOffset, bufferOffset: bufferOffset, length: count))
                    }
                }
                position = runEnd
            }
        }
    }
}
