import CairnIO

/// What one copy between two ranges of the pool did.
public struct VolumeCopyReport: Sendable, Hashable {
    /// Whole chunks the target now shares with the source: metadata only, no data moved.
    public var sharedChunks = 0
    /// Bytes copied by reading and writing inside the engine (chunk edges, chunks that could not be shared).
    public var copiedBytes: UInt64 = 0

    public init() {}
}

extension Pool {
    /// Bytes one sub-chunk copy reads and writes at once: bounds the buffer a copy holds.
    static let volumeCopyPiece: UInt64 = 1 << 20

    /// Copies `[sourceOffset, sourceOffset + length)` of a volume (live, or its snapshot at `snapshotEpoch`)
    /// onto `[targetOffset, ...)` of a live volume, inside the engine: SCSI EXTENDED COPY, VMware's clone
    /// primitive. Where a whole target chunk lines up with a whole source chunk of the same size whose data
    /// sits in one slot, the target chunk gets a new version pointing at that slot (shared like a dedup
    /// twin: a later write to either side copies on write); everything else is read and written here, never
    /// leaving the engine. The target is written like a host write (clone groups included).
    public func copyVolumeRange(
        from sourceID: UInt64, snapshotEpoch: UInt32? = nil, sourceOffset: UInt64, to targetID: UInt64,
        targetOffset: UInt64, length: UInt64, fua: Bool
    ) throws -> VolumeCopyReport {
        var report = VolumeCopyReport()
        guard length > 0 else { return report }
        let chunkSize = try monitor.withLock { () -> UInt64 in
            try checkWritable()
            let source = try state.liveVolume(sourceID)
            let target = try state.liveVolume(targetID)
            let sourceSize = try snapshotEpoch.map { try source.snapshot(atEpoch: $0).size } ?? source.record.size
            let (sourceEnd, overflow) = sourceOffset.addingReportingOverflow(length)
            guard !overflow, sourceEnd <= sourceSize else {
                throw EngineError(
                    .outOfRange, "range \(sourceOffset)+\(length) is past the end of the source (\(sourceSize) bytes)")
            }
            try Self.checkBounds(target, offset: targetOffset, length: length)
            return UInt64(target.geometry.chunkSize)
        }
        if snapshotEpoch == nil,
            try cloneGroups.readTarget(volumeID: sourceID, offset: sourceOffset, length: length) != sourceID
        {
            throw EngineError(.busy, "the source is being restored from a clone; copy it after the restore")
        }
        let ticket = try cloneGroups.beforeWrite(volumeID: targetID, offset: targetOffset, length: length, fua: fua)
        defer { cloneGroups.afterWrite(ticket) }
        // Ranges that could not be shared are gathered and copied a piece at a time.
        var pending: (offset: UInt64, length: UInt64)?
        func copyPending() throws {
            guard let range = pending else { return }
            pending = nil
            try copyThroughEngine(
                from: sourceID, snapshotEpoch: snapshotEpoch, sourceOffset: sourceOffset + range.offset, to: targetID,
                targetOffset: targetOffset + range.offset, length: range.length)
            report.copiedBytes += range.length
        }
        if sourceID == targetID, snapshotEpoch == nil, targetOffset > sourceOffset, targetOffset - sourceOffset < length {
            // The target overlaps the source from above: copy from the end down, as memmove does, so no
            // source byte is overwritten before it is read.
            var end = length
            while end > 0 {
                let count = min(end, Self.volumeCopyPiece)
                try copyThroughEngine(
                    from: sourceID, snapshotEpoch: nil, sourceOffset: sourceOffset + end - count, to: targetID,
                    targetOffset: targetOffset + end - count, length: count)
                end -= count
            }
            report.copiedBytes = length
        }
        var position: UInt64 = report.copiedBytes
        while position < length {
            let at = targetOffset + position
            let piece = min(length - position, (at / chunkSize + 1) * chunkSize - at)
            let source = sourceOffset + position
            if piece == chunkSize && at % chunkSize == 0 && source % chunkSize == 0 {
                // What is pending lies below: copied first, so sharing never runs ahead of it.
                try copyPending()
                if try shareChunk(
                    from: sourceID, snapshotEpoch: snapshotEpoch, chunk: source / chunkSize, to: targetID,
                    chunk: at / chunkSize)
                {
                    report.sharedChunks += 1
                    position += piece
                    continue
                }
            }
            if let range = pending, range.length < Self.volumeCopyPiece {
                pending = (range.offset, range.length + piece)
            } else {
                try copyPending()
                pending = (position, piece)
            }
            position += piece
        }
        try copyPending()
        if try cloneGroups.mirror(ticket, offset: targetOffset, fua: fua, { clone in
            try copyRange(from: targetID, to: clone, offset: targetOffset, length: length)
        }) || fua {
            try flush()
        }
        return report
    }

    /// Points a whole chunk of the target at the slot the source chunk reads from, if it reads from one
    /// slot of the target's slot file (monitor held throughout: no I/O, nothing to unlock). Waits while
    /// either chunk has I/O in flight, so no write planned before the share lands in the shared slot
    /// afterwards. False: the chunk must be copied instead.
    private func shareChunk(
        from sourceID: UInt64, snapshotEpoch: UInt32?, chunk sourceChunk: UInt64, to targetID: UInt64,
        chunk targetChunk: UInt64
    ) throws -> Bool {
        try monitor.withLock { () -> Bool in
            while true {
                try checkWritable()
                let source = try state.liveVolume(sourceID)
                let target = try state.liveVolume(targetID)
                guard source.geometry.chunkSize == target.geometry.chunkSize else { return false }
                if target.epochChangePending || source.readsBlocked
                    || !target.locks.isAvailable(targetChunk, exclusive: true)
                    || !source.locks.isAvailable(sourceChunk, exclusive: true)
                {
                    monitor.wait()
                    continue
                }
                let g = target.geometry
                let sources = state.resolve(source, sourceChunk, epoch: snapshotEpoch ?? .max, wanted: g.fullMask)
                guard sources.pieces.count <= 1 else { return false }
                var version = ChunkVersion.zeros(birth: target.epoch, defining: g.fullMask)
                if let piece = sources.pieces.first {
                    guard piece.slot.file == target.slotFile else { return false }
                    version.slot = piece.slot
                    version.dataMask = piece.mask
                }
                // A live chunk copied onto itself already holds what it would get.
                if sourceID == targetID && sourceChunk == targetChunk && snapshotEpoch == nil { return true }
                installShared(version, volume: target, chunk: targetChunk)
                return true
            }
        }
    }

    /// Makes `version` (born in the current epoch, defining the whole chunk) the chunk's newest version:
    /// replacing a newest version only the live volume reads, else on top of what snapshots keep.
    private func installShared(_ version: ChunkVersion, volume: VolumeState, chunk: UInt64) {
        let parentBelow = volume.record.parent != nil
        var latest: ChunkVersion?
        var replaces = false
        switch state.access(volume, chunk) {
        case .absent: break
        case .exclusive(let v):
            latest = v
            replaces = true
        case .shared(let v):
            latest = v
            replaces = v.birth == volume.epoch
        }
        if let latest, replaces {
            let below = (volume.map[chunk]?.count ?? 0) > 1 || parentBelow
            if !version.hasSlot && !below {
                dropLatest(volume: volume, chunk: chunk)
                return
            }
            if version.hasSlot && version.slot != latest.slot { state.retain(version.slot) }
            replaceLatest(version, volume: volume, chunk: chunk)
            return
        }
        // Nothing of its own and nothing underneath: the chunk already reads as zeros.
        if latest == nil && !version.hasSlot && !parentBelow { return }
        if version.hasSlot { state.retain(version.slot) }
        appendVersion(version, volume: volume, chunk: chunk)
    }

    /// The copy for what cannot be shared: read (holes stay holes) and write, a piece at a time.
    private func copyThroughEngine(
        from sourceID: UInt64, snapshotEpoch: UInt32?, sourceOffset: UInt64, to targetID: UInt64,
        targetOffset: UInt64, length: UInt64
    ) throws {
        let buffer = UnsafeMutableRawBufferPointer.allocate(
            byteCount: Int(min(length, Self.volumeCopyPiece)), alignment: 4096)
        defer { buffer.deallocate() }
        var done: UInt64 = 0
        while done < length {
            let count = min(length - done, Self.volumeCopyPiece)
            let part = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<Int(count)])
            let extents = try read(
                volumeID: sourceID, snapshotEpoch: snapshotEpoch, offset: sourceOffset + done, into: part)
            for extent in extents {
                let start = Int(extent.offset - (sourceOffset + done))
                let at = targetOffset + done + UInt64(start)
                if extent.isHole {
                    try discard(volumeID: targetID, offset: at, length: extent.length, mode: .zero, fua: false, limit: nil)
                } else {
                    let bytes = UnsafeRawBufferPointer(rebasing: part[start..<(start + Int(extent.length))])
                    try write(volumeID: targetID, offset: at, source: .bytes(bytes), fua: false, end: nil)
                }
            }
            done += count
        }
    }
}
