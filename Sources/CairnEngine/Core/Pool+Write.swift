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
        /// Exclusive version, every touched sub-block already holds data in its slot: just write.
        case inPlace
        /// Exclusive version changed in place: sub-blocks gain data (completed from below at partial
        /// edges), and a version without a slot gets one.
        case update
        /// A snapshot reads the newest version, or its slot is shared: a new version on top defines
        /// only what this write touches and lets the rest fall through. Nothing is copied except the
        /// partial sub-blocks at the write's edges. This is copy-on-write inside the engine.
        case newVersion
        /// The newest version was born in this epoch but its slot is shared (deduplicated): it is
        /// replaced by a copy carrying the write (COPY_AND_WRITE).
        case replace
    }

    var chunk: UInt64
    var kind: Kind
    /// Byte range inside the chunk.
    var segment: Range<UInt32>
    /// Where `segment` starts in the request.
    var requestOffset: UInt64
    /// The version after the write; its slot is where the data goes.
    var result: ChunkVersion
    /// `result.slot` is allocated for this write and goes back if the write fails.
    var freshSlot = false
    /// Copies into the target slot before the data is written: (source slot, sub-blocks).
    var fills: [(source: SlotAddress, mask: UInt64)] = []
    /// Zero-fill the start / end of the first / last touched sub-block.
    var padHead = false
    var padTail = false

    var target: SlotAddress { result.slot }
    var lockExclusive: Bool { kind != .inPlace }
}

/// A planned write: the chunk plans plus what the install step needs.
struct WritePlan {
    var volumeID: UInt64
    var geometry: ChunkGeometry
    /// Slot files by id: a chunk's versions may live in different files (a preserve store), so every
    /// operation goes to the file of the slot it names.
    var files: [UInt16: any StorageFile]
    var chunks: [ChunkWrite] = []
    /// FUA can be met by a durable data write alone: nothing to install, and every mapping touched is
    /// already committed.
    var durableDataWriteSuffices = true
}

extension Pool {
    /// Largest single pwrite the engine issues; longer runs are split. On ext4 with large folios the page
    /// cache sizes folios after the write, so 1 MiB writes make 1 MiB folios that later 4 KiB overwrites
    /// pay for (4-7x slower single-threaded), and streaming 1 MiB pwrites measured at 0.5-1 GiB/s against
    /// 1.8 GiB/s for 64 KiB pieces (docs/BENCHMARKS.md).
    static let maximumWriteSegment: UInt64 = 64 << 10

    /// Writes `source` at `offset` of volume `volumeID`. With `fua`, the data is durable on return.
    ///
    /// One call, one completion: when a snapshot still reads a chunk, the write becomes a new version
    /// that holds only what was written (plus the partial sub-blocks at its edges, copied inside the
    /// engine); the old data stays where it is and never leaves the engine.
    public func write(volumeID: UInt64, offset: UInt64, source: WriteSource, fua: Bool) throws {
        if try writeDeferringCommit(volumeID: volumeID, offset: offset, source: source, fua: fua) {
            try flush()
        }
    }

    /// Writes, and with `fua` makes the data durable unless that takes a metadata commit: then returns
    /// true and leaves the commit to the caller (`flush(completion:)`), so no I/O thread waits for it.
    /// A volume in a clone group goes through the group first (copy on demand, durable delta map bits)
    /// and its write is mirrored to the clones that are synchronized with it (CloneGroups/CloneGroups+IO.swift).
    public func writeDeferringCommit(volumeID: UInt64, offset: UInt64, source: WriteSource, fua: Bool) throws -> Bool {
        let ticket = try cloneGroups.beforeWrite(volumeID: volumeID, offset: offset, length: source.length, fua: fua)
        defer { cloneGroups.afterWrite(ticket) }
        let needsCommit = try write(volumeID: volumeID, offset: offset, source: source, fua: fua, end: nil, commitLater: true)
        let mirrored = try cloneGroups.mirror(ticket, offset: offset, fua: fua) { clone in
            try write(volumeID: clone, offset: offset, source: source, fua: false, end: nil)
        }
        return needsCommit || mirrored
    }

    /// `end` replaces the volume size in the bounds check (shrinking zeroes past the new size).
    func write(volumeID: UInt64, offset: UInt64, source: WriteSource, fua: Bool, end: UInt64?) throws {
        if try write(volumeID: volumeID, offset: offset, source: source, fua: fua, end: end, commitLater: true) {
            try flush()
        }
    }

    /// Returns true when FUA still needs a commit (only ever with `commitLater`).
    private func write(
        volumeID: UInt64, offset: UInt64, source: WriteSource, fua: Bool, end: UInt64?, commitLater: Bool
    ) throws -> Bool {
        let length = source.length
        guard length > 0 else { return false }
        try stores.copyOutBeforeWrite(volumeID: volumeID, offset: offset, length: length)
        let plan = try planWrite(volumeID: volumeID, offset: offset, length: length, end: end)
        var failure: (any Error)?
        let durable = fua && plan.durableDataWriteSuffices
        do {
            try execute(plan, source: source, durable: durable)
        } catch {
            failure = error
        }
        finishWrite(plan, succeeded: failure == nil)
        if let failure {
            // A failed RWF_DSYNC write or zero + sync is a failed sync, even with ENOSPC (writeback ran out
            // of space): it may also have consumed the error of earlier buffered writes, which the next
            // fdatasync would then miss. Only a zeroing refused before any data moved is not.
            let refusedBeforeWriting = (failure as? IOError).map {
                $0.kind == .noSpace && $0.operation.hasPrefix("fallocate")
            } ?? false
            if durable, !refusedBeforeWriting {
                throw failStop(file: media.location, call: "durable write", error: failure)
            }
            throw EngineError.io("writing volume data", failure)
        }
        return fua && !plan.durableDataWriteSuffices
    }

    /// Takes the chunk locks, classifies every chunk and allocates fresh slots, atomically.
    func planWrite(volumeID: UInt64, offset: UInt64, length: UInt64, end: UInt64?) throws -> WritePlan {
        try planWrite(volumeID: volumeID, offset: offset, length: length, end: end, immediate: false)!
    }

    /// `immediate`: nil instead of waiting (for a lock or an epoch change), and nil for a write that needs
    /// anything besides its own data write into one chunk (`Pool.writeIfImmediate`).
    func planWrite(volumeID: UInt64, offset: UInt64, length: UInt64, end: UInt64?, immediate: Bool) throws
        -> WritePlan?
    {
        try monitor.withLock {
            while true {
                try checkWritable()
                let volume = try state.liveVolume(volumeID)
                try Self.checkBounds(volume, offset: offset, length: length, end: end)
                if volume.epochChangePending {
                    if immediate { return nil }
                    monitor.wait()
                    continue
                }
                var plan = WritePlan(volumeID: volumeID, geometry: volume.geometry, files: files)
                plan.chunks = classify(volume, offset: offset, length: length)
                if immediate && !(plan.chunks.count == 1 && Self.needsNoOtherIO(plan.chunks[0])) { return nil }
                let available = plan.chunks.allSatisfy {
                    volume.locks.isAvailable($0.chunk, exclusive: $0.lockExclusive)
                }
                guard available else {
                    if immediate { return nil }
                    monitor.wait()
                    continue
                }
                try allocateSlots(&plan, volume: volume)
                for chunk in plan.chunks { volume.locks.acquire(chunk.chunk, exclusive: chunk.lockExclusive) }
                volume.writesInFlight += 1
                plan.durableDataWriteSuffices = plan.chunks.allSatisfy {
                    $0.kind == .inPlace && !state.isDirty(volumeID, $0.chunk)
                }
                return plan
            }
        }
    }

    /// Decides, per chunk, how the write changes it (monitor held). Chunks needing a slot are marked
    /// `freshSlot`; `allocateSlots` gives them one once every chunk lock is known to be available.
    func classify(_ volume: VolumeState, offset: UInt64, length: UInt64) -> [ChunkWrite] {
        let g = volume.geometry
        let epoch = volume.epoch
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
            var plan: ChunkWrite
            func make(_ kind: ChunkWrite.Kind, _ version: ChunkVersion) -> ChunkWrite {
                ChunkWrite(chunk: chunk, kind: kind, segment: from..<to, requestOffset: position - offset, result: version)
            }
            switch state.access(volume, chunk) {
            case .exclusive(let v) where v.hasSlot && touched & ~v.dataMask == 0:
                plan = make(.inPlace, v)
            case .exclusive(let v):
                var next = v
                next.dataMask |= touched
                next.definedMask |= touched
                plan = make(.update, next)
                plan.freshSlot = !v.hasSlot
                fillEdges(&plan, volume: volume, present: v.dataMask)
            case .shared(let v) where v.birth == epoch:
                let kept = v.dataMask & ~covered
                plan = make(
                    .replace,
                    ChunkVersion(birth: epoch, slot: .none, dataMask: kept | touched, definedMask: v.definedMask | touched))
                plan.freshSlot = true
                if kept != 0 { plan.fills.append((v.slot, kept)) }
                fillEdges(&plan, volume: volume, present: kept)
            case .shared, .absent:
                let defined = state.hasUnderneath(volume, chunk) ? touched : g.fullMask
                plan = make(.newVersion, ChunkVersion(birth: epoch, slot: .none, dataMask: touched, definedMask: defined))
                plan.freshSlot = true
                fillEdges(&plan, volume: volume, present: 0)
            }
            result.append(plan)
            position = chunkStart + UInt64(to)
        }
        return result
    }

    /// A write edge inside a sub-block whose bytes are not in the target slot yet (`present`) must
    /// complete that sub-block before its data bit is set: with what a reader sees there now (copied
    /// from the slot below), or with zeros. The target slot may hold stale bytes there, so this is
    /// never skipped (monitor held).
    private func fillEdges(_ plan: inout ChunkWrite, volume: VolumeState, present: UInt64) {
        let sub = volume.geometry.subBlockSize
        let head: UInt64? = plan.segment.lowerBound % sub == 0 ? nil : 1 << UInt64(plan.segment.lowerBound / sub)
        let tail: UInt64? = plan.segment.upperBound % sub == 0 ? nil : 1 << UInt64(plan.segment.upperBound / sub)
        for bit in Set([head, tail].compactMap { $0 }) where present & bit == 0 {
            if let source = state.resolve(volume, plan.chunk, wanted: bit).slot(for: bit) {
                plan.fills.append((source, bit))
            } else {
                if bit == head { plan.padHead = true }
                if bit == tail { plan.padTail = true }
            }
        }
    }

    /// Gives every chunk that needs one a fresh slot, or fails with ENOSPC having changed nothing.
    private func allocateSlots(_ plan: inout WritePlan, volume: VolumeState) throws {
        let needed = plan.chunks.lazy.filter(\.freshSlot).count
        guard needed > 0 else { return }
        try checkSpace(forChunks: needed, chunkSize: volume.geometry.chunkSize)
        for index in plan.chunks.indices where plan.chunks[index].freshSlot {
            plan.chunks[index].result.slot = state.allocators[volume.slotFile]!.allocate()
        }
    }

    /// Refuses new allocations when the filesystem is down to its reserve (monitor held).
    func checkSpace(forChunks count: Int, chunkSize: UInt32) throws {
        if let available = media.availableBytes(),
            available < options.reservedBytes + UInt64(count) * UInt64(chunkSize)
        {
            throw EngineError(
                .noSpace,
                "the pool is out of space (\(available) bytes free on \(media.location), "
                    + "\(options.reservedBytes) kept in reserve); delete snapshots or volumes, or grow the disk")
        }
    }

    static func checkBounds(_ volume: VolumeState, offset: UInt64, length: UInt64, end limit: UInt64? = nil) throws {
        let (end, overflow) = offset.addingReportingOverflow(length)
        guard !overflow, end <= limit ?? volume.record.size else {
            throw EngineError(
                .outOfRange,
                "range \(offset)+\(length) is past the end of volume '\(volume.record.name)' (\(volume.record.size) bytes)")
        }
    }

    /// Fills, then writes, each chunk's data; coalesces plain writes to consecutive slots.
    func execute(_ plan: WritePlan, source: WriteSource, durable: Bool) throws {
        let g = plan.geometry
        let chunkBytes = UInt64(g.chunkSize)
        for chunk in plan.chunks {
            // A fresh slot is allocated on the disk at once, so its sub-blocks' direct writes do not
            // each allocate blocks.
            if chunk.freshSlot {
                try plan.files[chunk.target.file]!.preallocate(at: chunk.target.index * chunkBytes, length: chunkBytes)
            }
            for fill in chunk.fills {
                try fill.mask.forEachRun { first, count in
                    let delta = UInt64(first) * UInt64(g.subBlockSize)
                    try plan.files[chunk.target.file]!.copy(
                        from: plan.files[fill.source.file]!, at: fill.source.index * chunkBytes + delta,
                        to: chunk.target.index * chunkBytes + delta, length: UInt64(count) * UInt64(g.subBlockSize))
                }
            }
        }
        var pending: (file: UInt16, fileOffset: UInt64, requestOffset: UInt64, length: UInt64)?
        func flushPending() throws {
            guard let run = pending else { return }
            pending = nil
            try writeRun(
                plan.files[run.file]!, source: source, fileOffset: run.fileOffset, requestOffset: run.requestOffset,
                length: run.length, durable: durable)
        }
        for chunk in plan.chunks {
            let slotStart = chunk.target.index * chunkBytes
            let length = UInt64(chunk.segment.count)
            if !chunk.padHead && !chunk.padTail {
                let fileOffset = slotStart + UInt64(chunk.segment.lowerBound)
                if let run = pending, run.file == chunk.target.file, run.fileOffset + run.length == fileOffset,
                    run.requestOffset + run.length == chunk.requestOffset
                {
                    pending!.length += length
                } else {
                    try flushPending()
                    pending = (chunk.target.file, fileOffset, chunk.requestOffset, length)
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
            var done: UInt64 = 0
            while done < length {
                let piece = min(length - done, Self.maximumWriteSegment)
                let start = Int(requestOffset + done)
                let part = UnsafeRawBufferPointer(rebasing: buffer[start..<(start + Int(piece))])
                if durable {
                    try file.writeDurably(part, at: fileOffset + done)
                } else {
                    try file.write(part, at: fileOffset + done)
                }
                done += piece
            }
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
        let file = plan.files[chunk.target.file]!
        let from = chunk.padHead ? chunk.segment.lowerBound / sub * sub : chunk.segment.lowerBound
        let to = chunk.padTail ? (chunk.segment.upperBound + sub - 1) / sub * sub : chunk.segment.upperBound
        switch source {
        case .zeros:
            try writeRun(file, source: source, fileOffset: slotStart + UInt64(from), requestOffset: 0,
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
                try file.writeDurably(bytes, at: slotStart + UInt64(from))
            } else {
                try file.write(bytes, at: slotStart + UInt64(from))
            }
        }
    }

    /// Installs the new versions (or gives fresh slots back after a failure), releases the chunk locks
    /// and wakes waiters.
    func finishWrite(_ plan: WritePlan, succeeded: Bool) {
        monitor.withLock {
            guard let volume = state.volumes[plan.volumeID] else {
                // Deleted under us (forced delete): fresh slots were never referenced by any mapping.
                for chunk in plan.chunks where chunk.freshSlot {
                    state.allocators[chunk.target.file]?.abandon(chunk.target.index)
                }
                return
            }
            // Even a failed write may have changed bytes on disk; the next FLUSH syncs them either way.
            state.unsyncedData = true
            for chunk in plan.chunks {
                volume.locks.release(chunk.chunk, exclusive: chunk.lockExclusive)
                guard succeeded else {
                    if chunk.freshSlot { state.allocators[chunk.target.file]!.abandon(chunk.target.index) }
                    continue
                }
                switch chunk.kind {
                case .inPlace: break
                case .update, .replace: replaceLatest(chunk.result, volume: volume, chunk: chunk.chunk)
                case .newVersion: appendVersion(chunk.result, volume: volume, chunk: chunk.chunk)
                }
            }
            volume.writesInFlight -= 1
        }
        monitor.broadcast()
    }

    /// Puts `version` in place of the newest version of a chunk, releasing the old slot when the new
    /// version does not keep it (monitor held, chunk locked exclusive).
    func replaceLatest(_ version: ChunkVersion, volume: VolumeState, chunk: UInt64) {
        var list = volume.map[chunk]!
        if list.latest.slot != version.slot { state.release(list.latest.slot) }
        list.replaceLatest(with: version)
        volume.setVersions(chunk, list)
        state.markDirty(volume.id, chunk)
    }

    /// Adds `version` as the newest version of a chunk (monitor held, chunk locked exclusive).
    func appendVersion(_ version: ChunkVersion, volume: VolumeState, chunk: UInt64) {
        if var list = volume.map[chunk] {
            list.append(version)
            volume.setVersions(chunk, list)
        } else {
            volume.setVersions(chunk, .one(version))
        }
        state.markDirty(volume.id, chunk)
    }

    /// Removes the newest version of a chunk and its slot reference (monitor held, chunk locked exclusive).
    func dropLatest(volume: VolumeState, chunk: UInt64) {
        let list = volume.map[chunk]!
        state.release(list.latest.slot)
        volume.setVersions(chunk, list.droppingLatest())
        state.markDirty(volume.id, chunk)
    }

    /// Runs `body` with no write of `volume` between planning and installing (monitor held): new writes
    /// wait, writes in flight finish first. Used wherever the epoch changes.
    func withEpochBarrier<T>(_ volume: VolumeState, _ body: () throws -> T) rethrows -> T {
        while volume.epochChangePending { monitor.wait() }
        volume.epochChangePending = true
        defer { volume.epochChangePending = false }
        while volume.writesInFlight > 0 { monitor.wait() }
        return try body()
    }
}
