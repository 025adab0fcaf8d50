import CairnIO

/// The bytes a write puts down.
public enum WriteSource {
    /// Caller's buffer; its count is the write length.
    case bytes(UnsafeRawBufferPointer)
    /// Zeros, kept allocated (NBD WRITE_ZEROES with NO_HOLE): written with fallocate(ZERO_RANGE).
    case zeros(length: UInt64)

    var length: UInt64 {
        switch self {
        case .bytes(let buffer): UInt64(buffer.count)
        case .zeros(let length): length
        }
    }
}

/// The plan for one chunk of a write, made under the pool mutex and executed outside it.
struct ChunkWrite {
    enum Kind {
        /// Exclusive version, every touched sub-block already holds data: just write.
        case inPlace
        /// Exclusive version, some touched sub-block is new: write (padding it) and set mask bits.
        case inPlaceGrowingMask
        /// Shared, inherited or absent version: write a fresh slot (copying what the write does not
        /// cover from the old one) and install a new version. This is "breaking sharing".
        case redirect
    }

    var chunk: UInt64
    var kind: Kind
    /// Byte range inside the chunk.
    var segment: Range<UInt32>
    /// Where `segment` starts in the request.
    var requestOffset: UInt64
    var target: SlotAddress
    /// Slot to copy unwritten sub-blocks from, when redirecting a chunk that has data.
    var copySource: SlotAddress = .none
    var copyMask: UInt64 = 0
    /// Zero-fill the start / end of the first / last touched sub-block (no data there yet).
    var padHead = false
    var padTail = false
    var newMask: UInt64

    var lockExclusive: Bool { kind != .inPlace }
}

/// A planned write: the chunk plans plus what the install step needs.
struct WritePlan {
    var volumeID: UInt64
    var epoch: UInt32
    var geometry: ChunkGeometry
    var file: any StorageFile
    var chunks: [ChunkWrite] = []
    /// FUA can be met by a durable data write alone: nothing to install, and every mapping touched is
    /// already committed.
    var durableDataWriteSuffices = true
}

extension Pool {
    /// Writes `source` at `offset` of volume `volumeID`. With `fua`, the data is durable on return.
    ///
    /// One call, one completion: when a chunk is shared with a snapshot, a clone or a dedup twin, the
    /// engine copies what the write does not cover into a new slot and writes the new data there; the
    /// old data never leaves the engine.
    public func write(volumeID: UInt64, offset: UInt64, source: WriteSource, fua: Bool) throws {
        try write(volumeID: volumeID, offset: offset, source: source, fua: fua, end: nil)
    }

    /// `end` replaces the volume size in the bounds check (shrinking zeroes past the new size).
    func write(volumeID: UInt64, offset: UInt64, source: WriteSource, fua: Bool, end: UInt64?) throws {
        let length = source.length
        guard length > 0 else { return }
        let plan = try planWrite(volumeID: volumeID, offset: offset, length: length, end: end)
        var failure: (any Error)?
        do {
            try execute(plan, source: source, durable: fua && plan.durableDataWriteSuffices)
        } catch {
            failure = error
        }
        finishWrite(plan, succeeded: failure == nil)
        if let failure { throw EngineError.io("writing volume data", failure) }
        if fua && !plan.durableDataWriteSuffices { try flush() }
    }

    /// Takes the chunk locks, classifies every chunk and allocates fresh slots, atomically.
    func planWrite(volumeID: UInt64, offset: UInt64, length: UInt64, end: UInt64?) throws -> WritePlan {
        try monitor.withLock {
            while true {
                try checkWritable()
                let volume = try state.liveVolume(volumeID)
                try Self.checkBounds(volume, offset: offset, length: length, end: end)
                if volume.epochChangePending {
                    monitor.wait()
                    continue
                }
                var plan = WritePlan(
                    volumeID: volumeID, epoch: volume.epoch, geometry: volume.geometry,
                    file: files[volume.slotFile]!)
                plan.chunks = classify(volume, offset: offset, length: length)
                let available = plan.chunks.allSatisfy {
                    volume.locks.isAvailable($0.chunk, exclusive: $0.lockExclusive)
                }
                guard available else {
                    monitor.wait()
                    continue
                }
                try allocateSlots(&plan, volume: volume)
                for chunk in plan.chunks {
                    state.volumes[volumeID]!.locks.acquire(chunk.chunk, exclusive: chunk.lockExclusive)
                }
                state.volumes[volumeID]!.writesInFlight += 1
                plan.durableDataWriteSuffices = plan.chunks.allSatisfy {
                    $0.kind == .inPlace && !state.isDirty(volumeID, $0.chunk)
                }
                return plan
            }
        }
    }

    /// Decides, per chunk, between writing in place and breaking sharing (monitor held).
    private func classify(_ volume: VolumeState, offset: UInt64, length: UInt64) -> [ChunkWrite] {
        let g = volume.geometry
        var result: [ChunkWrite] = []
        var position = offset
        let end = offset + length
        while position < end {
            let chunk = g.chunk(containing: position)
            let chunkStart = g.start(of: chunk)
            let from = UInt32(position - chunkStart)
            let to = UInt32(min(end - chunkStart, UInt64(g.chunkSize)))
            let touched = g.touchedMask(from: from, to: to)
            let covered = g.coveredMask(from: from, to: to)
            let resolution = state.resolveLive(volume, chunk)
            var plan: ChunkWrite
            if resolution.exclusive, let version = resolution.version {
                let growing = touched & ~version.mask != 0
                plan = ChunkWrite(
                    chunk: chunk, kind: growing ? .inPlaceGrowingMask : .inPlace, segment: from..<to,
                    requestOffset: position - offset, target: version.slot, newMask: version.mask | touched)
                plan.padHead = Self.needsPad(at: from, g: g, mask: version.mask)
                plan.padTail = Self.needsPad(at: to, g: g, mask: version.mask)
            } else {
                let old = resolution.version
                let copyMask = (old?.mask ?? 0) & ~covered
                plan = ChunkWrite(
                    chunk: chunk, kind: .redirect, segment: from..<to, requestOffset: position - offset,
                    target: .none, copySource: copyMask == 0 ? .none : old!.slot, copyMask: copyMask,
                    newMask: copyMask | touched)
                plan.padHead = Self.needsPad(at: from, g: g, mask: copyMask)
                plan.padTail = Self.needsPad(at: to, g: g, mask: copyMask)
            }
            result.append(plan)
            position = chunkStart + UInt64(to)
        }
        return result
    }

    /// A write edge inside a sub-block that holds no data yet must zero-fill the rest of that
    /// sub-block: its mask bit is about to be set, and the slot may hold stale bytes there.
    private static func needsPad(at edge: UInt32, g: ChunkGeometry, mask: UInt64) -> Bool {
        guard edge % g.subBlockSize != 0 else { return false }
        let bit = UInt64(1) << UInt64(edge / g.subBlockSize)
        return mask & bit == 0
    }

    /// Gives every redirected chunk a fresh slot, or fails with ENOSPC having changed nothing.
    private func allocateSlots(_ plan: inout WritePlan, volume: VolumeState) throws {
        let needed = plan.chunks.lazy.filter { $0.kind == .redirect }.count
        guard needed > 0 else { return }
        if let available = media.availableBytes(),
            available < options.reservedBytes + UInt64(needed) * UInt64(volume.geometry.chunkSize)
        {
            throw EngineError(
                .noSpace,
                "the pool is out of space (\(available) bytes free on \(media.location), "
                    + "\(options.reservedBytes) kept in reserve); delete snapshots or volumes, or grow the disk")
        }
        for index in plan.chunks.indices where plan.chunks[index].kind == .redirect {
            plan.chunks[index].target = state.allocators[volume.slotFile]!.allocate()
        }
    }

    static func checkBounds(_ volume: VolumeState, offset: UInt64, length: UInt64, end limit: UInt64? = nil) throws {
        let (end, overflow) = offset.addingReportingOverflow(length)
        guard !overflow, end <= limit ?? volume.record.size else {
            throw EngineError(
                .invalidArgument,
                "range \(offset)+\(length) is past the end of volume '\(volume.record.name)' (\(volume.record.size) bytes)")
        }
    }

    /// Copies, then writes, each chunk's data; coalesces plain writes to consecutive slots.
    private func execute(_ plan: WritePlan, source: WriteSource, durable: Bool) throws {
        let g = plan.geometry
        let chunkBytes = UInt64(g.chunkSize)
        for chunk in plan.chunks where chunk.copyMask != 0 {
            try chunk.copyMask.forEachRun { first, count in
                let delta = UInt64(first) * UInt64(g.subBlockSize)
                try plan.file.copy(
                    from: plan.file, at: chunk.copySource.index * chunkBytes + delta,
                    to: chunk.target.index * chunkBytes + delta, length: UInt64(count) * UInt64(g.subBlockSize))
            }
        }
        var pending: (fileOffset: UInt64, requestOffset: UInt64, length: UInt64)?
        func flushPending() throws {
            guard let run = pending else { return }
            pending = nil
            try writeRun(plan.file, source: source, fileOffset: run.fileOffset, requestOffset: run.requestOffset,
                length: run.length, durable: durable)
        }
        for chunk in plan.chunks {
            let slotStart = chunk.target.index * chunkBytes
            let length = UInt64(chunk.segment.count)
            if !chunk.padHead && !chunk.padTail {
                let fileOffset = slotStart + UInt64(chunk.segment.lowerBound)
                if let run = pending, run.fileOffset + run.length == fileOffset,
                    run.requestOffset + run.length == chunk.requestOffset
                {
                    pending!.length += length
                } else {
                    try flushPending()
                    pending = (fileOffset, chunk.requestOffset, length)
                }
                continue
            }
            try flushPending()
            try writePadded(chunk, plan: plan, source: source, slotStart: slotStart, durable: durable)
        }
        try flushPending()
    }

    private func writeRun(_ file: any StorageFile, source: WriteSource, fileOffset: UInt64, requestOffset: UInt64,
        length: UInt64, durable: Bool) throws
    {
        switch source {
        case .bytes(let buffer):
            let part = UnsafeRawBufferPointer(rebasing: buffer[Int(requestOffset)..<Int(requestOffset + length)])
            if durable { try file.writeDurably(part, at: fileOffset) } else { try file.write(part, at: fileOffset) }
        case .zeros:
            try file.zeroRange(at: fileOffset, length: length)
            if durable { try file.sync() }
        }
    }

    /// Writes one chunk's segment widened to whole sub-blocks at the padded edges.
    private func writePadded(_ chunk: ChunkWrite, plan: WritePlan, source: WriteSource, slotStart: UInt64,
        durable: Bool) throws
    {
        let sub = plan.geometry.subBlockSize
        let from = chunk.padHead ? chunk.segment.lowerBound / sub * sub : chunk.segment.lowerBound
        let to = chunk.padTail ? (chunk.segment.upperBound + sub - 1) / sub * sub : chunk.segment.upperBound
        switch source {
        case .zeros:
            try writeRun(plan.file, source: source, fileOffset: slotStart + UInt64(from), requestOffset: 0,
                length: UInt64(to - from), durable: durable)
        case .bytes(let buffer):
            let staging = UnsafeMutableRawBufferPointer.allocate(byteCount: Int(to - from), alignment: 4096)
            defer { staging.deallocate() }
            staging.initializeMemory(as: UInt8.self, repeating: 0)
            let head = Int(chunk.segment.lowerBound - from)
            let start = Int(chunk.requestOffset)
            UnsafeMutableRawBufferPointer(rebasing: staging[head..<(head + chunk.segment.count)])
                .copyMemory(from: UnsafeRawBufferPointer(rebasing: buffer[start..<(start + chunk.segment.count)]))
            let bytes = UnsafeRawBufferPointer(staging)
            if durable {
                try plan.file.writeDurably(bytes, at: slotStart + UInt64(from))
            } else {
                try plan.file.write(bytes, at: slotStart + UInt64(from))
            }
        }
    }

    /// Installs new versions and masks (or gives fresh slots back after a failure), releases the
    /// chunk locks and wakes waiters.
    func finishWrite(_ plan: WritePlan, succeeded: Bool) {
        monitor.withLock {
            let id = plan.volumeID
            guard state.volumes[id] != nil else {
                // Deleted under us (forced delete): fresh slots were never referenced by any mapping.
                for chunk in plan.chunks where chunk.kind == .redirect {
                    state.allocators[chunk.target.file]?.abandon(chunk.target.index)
                }
                return
            }
            // Even a failed write may have changed bytes on disk; the next FLUSH syncs them either way.
            state.unsyncedData = true
            for chunk in plan.chunks {
                state.volumes[id]!.locks.release(chunk.chunk, exclusive: chunk.lockExclusive)
                guard succeeded else {
                    if chunk.kind == .redirect { state.allocators[chunk.target.file]!.abandon(chunk.target.index) }
                    continue
                }
                switch chunk.kind {
                case .inPlace:
                    break
                case .inPlaceGrowingMask:
                    var list = state.volumes[id]!.map[chunk.chunk]!
                    var latest = list.latest
                    latest.mask = chunk.newMask
                    list.replaceLatest(with: latest)
                    state.volumes[id]!.setVersions(chunk.chunk, list)
                    state.markDirty(id, chunk.chunk)
                case .redirect:
                    installVersion(
                        ChunkVersion(birth: plan.epoch, slot: chunk.target, mask: chunk.newMask), volumeID: id,
                        chunk: chunk.chunk)
                }
            }
            state.volumes[id]!.writesInFlight -= 1
        }
        monitor.broadcast()
    }

    /// Makes `version` the newest version of a chunk: it replaces the current newest when no snapshot
    /// can see that one, and is appended otherwise (monitor held, chunk locked exclusive).
    func installVersion(_ version: ChunkVersion, volumeID id: UInt64, chunk: UInt64) {
        let volume = state.volumes[id]!
        if var list = volume.map[chunk] {
            let latestIndex = list.count - 1
            if list.latest.birth == version.birth || !volume.isVisibleToSnapshot(list, index: latestIndex) {
                state.release(list.latest.slot)
                list.replaceLatest(with: version)
            } else {
                list.append(version)
            }
            state.volumes[id]!.setVersions(chunk, list)
        } else {
            state.volumes[id]!.setVersions(chunk, .one(version))
        }
        state.markDirty(id, chunk)
    }
}
