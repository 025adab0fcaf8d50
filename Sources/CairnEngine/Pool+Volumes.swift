import CairnIO
import Logging
import Synchronization

extension Pool {
    /// Largest volume: 256 TiB. The in-memory map grows with written data, not with size, but a bound
    /// keeps chunk arithmetic far from overflow and catches unit mistakes ("1P" for "1G").
    public static let maximumVolumeSize: UInt64 = 256 << 40
    /// Volume sizes are whole 512-byte sectors: every NBD client and guest expects that.
    public static let sizeAlignment: UInt64 = 512

    /// Creates an empty thin volume; it costs no space until written.
    @discardableResult
    public func createVolume(name: String, size: UInt64, chunkSize: UInt32? = nil, preserveStore: String? = nil) throws
        -> VolumeInfo
    {
        try NameRules.validate(name)
        try Self.validateSize(size)
        let geometry = try ChunkGeometry(chunkSize: chunkSize ?? ChunkGeometry.defaultChunkSize)
        let info = try monitor.withLock { () -> VolumeInfo in
            try checkWritable()
            guard state.volumeIDs[name] == nil else {
                throw EngineError(.alreadyExists, "volume '\(name)' already exists")
            }
            if let preserveStore, state.stores[preserveStore] == nil {
                throw EngineError(.notFound, "store '\(preserveStore)' does not exist; add it with `cairn pool store add`")
            }
            let fileID = try slotFile(forChunkSize: geometry.chunkSize)
            let id = state.nextVolumeID
            state.nextVolumeID += 1
            let record = VolumeRecord(
                id: id, name: name, size: size, chunkSize: geometry.chunkSize, epoch: 1, parent: nil,
                createdAt: Self.now(), preserveStore: preserveStore)
            if preserveStore != nil { preserveStoresInUse.store(true, ordering: .relaxed) }
            state.volumes[id] = VolumeState(record: record, geometry: geometry, slotFile: fileID)
            state.volumeIDs[name] = id
            state.dirty.volumes.insert(id)
            return self.info(of: state.volumes[id]!)
        }
        try flush()
        logger.info("volume created", metadata: ["volume": "\(name)", "size": "\(size)"])
        return info
    }

    public func listVolumes() -> [VolumeInfo] {
        monitor.withLock {
            state.volumes.values.sorted { $0.record.name < $1.record.name }.map { info(of: $0) }
        }
    }

    public func volumeInfo(named name: String) throws -> VolumeInfo {
        try monitor.withLock { info(of: state.volumes[try state.volumeID(named: name)]!) }
    }

    /// Grows or shrinks a volume. Shrinking below written data is refused unless `force`, which discards
    /// the data past the new end (snapshots keep theirs).
    @discardableResult
    public func resizeVolume(name: String, size: UInt64, force: Bool = false) throws -> VolumeInfo {
        try Self.validateSize(size)
        let id = try monitor.withLock { () -> UInt64 in
            try checkWritable()
            let id = try state.volumeID(named: name)
            let volume = state.volumes[id]!
            if size != volume.record.size { try cloneGroups.refuse(.resize, of: id) }
            guard size < volume.record.size else { return id }
            if volume.attachments > 0 && !force {
                throw EngineError(
                    .busy,
                    "volume '\(name)' has \(volume.attachments) attached session(s); shrinking under a client "
                        + "makes its writes fail. Disconnect them or use --force")
            }
            let lost = dataBytes(of: volume, from: size)
            if lost > 0 && !force {
                throw EngineError(
                    .wouldLoseData,
                    "shrinking '\(name)' to \(size) bytes would discard \(lost) bytes of written data; "
                        + "use --force to discard it")
            }
            return id
        }
        let current = try monitor.withLock { state.volumes[id]!.record.size }
        if size < current {
            // Discard first, then cut: a concurrent write past the new end fails its bounds check
            // once the size changes, and nothing it wrote before survives the discard.
            try monitor.withLock { state.volumes[id]!.record.size = size }
            try discard(volumeID: id, offset: size, length: current - size, mode: .zero, fua: false, limit: current)
        } else {
            try monitor.withLock { state.volumes[id]!.record.size = size }
        }
        let info = try monitor.withLock { () -> VolumeInfo in
            guard state.volumes[id] != nil else { throw EngineError(.notFound, "volume '\(name)' was deleted") }
            state.dirty.volumes.insert(id)
            return self.info(of: state.volumes[id]!)
        }
        try flush()
        logger.info("volume resized", metadata: ["volume": "\(name)", "size": "\(size)"])
        return info
    }

    @discardableResult
    public func renameVolume(from name: String, to newName: String) throws -> VolumeInfo {
        try NameRules.validate(newName)
        let info = try monitor.withLock { () -> VolumeInfo in
            try checkWritable()
            let id = try state.volumeID(named: name)
            guard name != newName else { return self.info(of: state.volumes[id]!) }
            guard state.volumeIDs[newName] == nil else {
                throw EngineError(.alreadyExists, "volume '\(newName)' already exists")
            }
            state.volumeIDs[name] = nil
            state.volumeIDs[newName] = id
            state.volumes[id]!.record.name = newName
            state.dirty.volumes.insert(id)
            return self.info(of: state.volumes[id]!)
        }
        try flush()
        logger.info("volume renamed", metadata: ["volume": "\(name)", "to": "\(newName)"])
        return info
    }

    /// Deletes a volume and gives its space back. Refused while sessions are attached or snapshots
    /// exist, unless `force`.
    public func deleteVolume(name: String, force: Bool = false) throws {
        try monitor.withLock {
            try checkWritable()
            let id = try state.volumeID(named: name)
            let volume = state.volumes[id]!
            try cloneGroups.refuse(.delete, of: id)
            if let child = state.volumes.values.first(where: { $0.record.parent?.volumeID == id }) {
                throw EngineError(
                    .busy, "volume '\(name)' has a clone '\(child.record.name)'; delete the clone first")
            }
            if volume.attachments > 0 && !force {
                throw EngineError(
                    .busy,
                    "volume '\(name)' has \(volume.attachments) attached session(s); disconnect them or use --force")
            }
            if !volume.snapshots.isEmpty && !force {
                throw EngineError(
                    .busy,
                    "volume '\(name)' has \(volume.snapshots.count) snapshot(s); delete them first or use --force")
            }
            // Forced: new I/O on the volume fails from now on; wait for what is in flight to finish.
            volume.deleting = true
            while !volume.locks.isEmpty || volume.writesInFlight > 0 { monitor.wait() }
            for list in volume.map.values {
                for version in list.versions { state.release(version.slot) }
            }
            state.volumes[id] = nil
            state.volumeIDs[name] = nil
            state.dirty.volumes.remove(id)
            state.dirty.deletedVolumes.append(id)
        }
        try flush()
        logger.info("volume deleted", metadata: ["volume": "\(name)"])
    }

    /// Space accounting and capabilities of the pool.
    public func status() -> PoolStatus {
        let fileList = monitor.withLock { Array(files.values) }
        let fileBytes = fileList.reduce(UInt64(0)) { $0 + ((try? $1.allocatedBytes()) ?? 0) }
        return monitor.withLock {
            // Slot files are sparse: a slot costs what its data sub-blocks hold. Count each slot once,
            // with the union of the data its versions keep there.
            var slotData: [SlotAddress: (mask: UInt64, references: Int, subBlock: UInt64)] = [:]
            for volume in state.volumes.values {
                let sub = UInt64(volume.geometry.subBlockSize)
                for list in volume.map.values {
                    for version in list.versions where version.hasSlot {
                        let entry = slotData[version.slot] ?? (0, 0, sub)
                        slotData[version.slot] = (entry.mask | version.dataMask, entry.references + 1, sub)
                    }
                }
            }
            var used: UInt64 = 0
            var shared: UInt64 = 0
            for entry in slotData.values {
                let bytes = UInt64(entry.mask.nonzeroBitCount) * entry.subBlock
                used += bytes
                if entry.references > 1 { shared += bytes }
            }
            var pending: UInt64 = 0
            for (id, allocator) in state.allocators {
                pending += UInt64(allocator.pendingCount) * UInt64(state.slotFileRecords[id]!.chunkSize)
            }
            var status = PoolStatus(
                poolID: poolID, location: media.location, copyMethod: copyMethod, volumeCount: state.volumes.count,
                provisionedBytes: state.volumes.values.reduce(0) { $0 + $1.record.size },
                usedBytes: used, sharedBytes: shared, pendingFreeBytes: pending, fileBytes: fileBytes,
                filesystemAvailableBytes: media.availableBytes(), failure: state.failure?.message,
                bytesWritten: counters.bytesWritten.load(ordering: .relaxed),
                bytesCopied: counters.bytesCopied.load(ordering: .relaxed),
                bytesZeroed: counters.bytesZeroed.load(ordering: .relaxed),
                bytesRead: counters.bytesRead.load(ordering: .relaxed),
                dataWrites: Self.dataWriteMode(files.values.map(\.writeMode)), dataChecksums: options.dataChecksums,
                checksumMismatches: checksumMismatchCount,
                uncheckedDataSinceBeforeChecksums: slotFilesWithUncheckedData.load(ordering: .relaxed) > 0)
            status.immediateWrites = immediateWrites.written.load(ordering: .relaxed)
            status.immediateWritesThrottled = immediateWrites.throttled.load(ordering: .relaxed)
            return status
        }
    }

    // MARK: - Helpers (monitor held)

    func info(of volume: VolumeState) -> VolumeInfo {
        // Data the live volume reads from its own versions (not from a clone's parent).
        var allocated: UInt64 = 0
        for (chunk, list) in volume.map {
            var remaining = volume.geometry.fullMask
            for version in list.versions.reversed() {
                allocated += UInt64((remaining & version.dataMask).nonzeroBitCount)
                remaining &= ~version.definedMask
                if remaining == 0 { break }
            }
            _ = chunk
        }
        allocated *= UInt64(volume.geometry.subBlockSize)
        var origin: String?
        if let parent = volume.record.parent, let source = state.volumes[parent.volumeID] {
            let snapshot = source.snapshots.first { $0.epoch == parent.epoch }?.name ?? "epoch-\(parent.epoch)"
            origin = "\(source.record.name)@\(snapshot)"
        }
        return VolumeInfo(
            id: volume.id, name: volume.record.name, size: volume.record.size, chunkSize: volume.record.chunkSize,
            allocatedBytes: allocated, mappedChunks: volume.map.count, snapshotCount: volume.snapshots.count,
            attachments: volume.attachments, createdAt: volume.record.createdAt, origin: origin,
            preserveStore: volume.record.preserveStore)
    }

    /// Bytes of live data at or past `offset`.
    func dataBytes(of volume: VolumeState, from offset: UInt64) -> UInt64 {
        let g = volume.geometry
        var total: UInt64 = 0
        for chunk in candidateChunks(volume, from: g.chunk(containing: offset), through: .max, limit: .max) {
            var mask = state.resolve(volume, chunk, wanted: g.fullMask).dataMask
            let start = g.start(of: chunk)
            if start < offset {
                // Counts a sub-block that straddles `offset` as lost: masks do not know which of its
                // bytes were written.
                mask &= g.touchedMask(from: UInt32(offset - start), to: g.chunkSize)
            }
            total += UInt64(mask.nonzeroBitCount) * UInt64(g.subBlockSize)
        }
        return total
    }

    /// The slot file for `chunkSize` in the pool (or in `store`), created (and queued for commit) on first
    /// use.
    func slotFile(forChunkSize chunkSize: UInt32, store: String? = nil) throws -> UInt16 {
        if let existing = state.slotFileRecords.values.first(where: { $0.chunkSize == chunkSize && $0.store == store }) {
            return existing.id
        }
        let id = (state.slotFileRecords.keys.max() ?? 0) + 1
        let record = SlotFileRecord(id: id, name: "slots-\(chunkSize).dat", chunkSize: chunkSize, store: store)
        let storePath = store.flatMap { state.stores[$0]?.path }
        files[id] = MeteredStorageFile(
            try checksummed(media.openSlotFile(named: record.name, in: storePath), slotFile: record.name, in: storePath),
            counters: counters)
        state.slotFileRecords[id] = record
        state.allocators[id] = SlotAllocator(fileID: id, chunkSize: chunkSize)
        state.dirty.slotFiles.append(record)
        return id
    }

    static func validateSize(_ size: UInt64) throws {
        guard size > 0 else { throw EngineError(.invalidArgument, "a volume size must be greater than zero") }
        guard size % sizeAlignment == 0 else {
            throw EngineError(.invalidArgument, "volume size \(size) is not a multiple of \(sizeAlignment) bytes")
        }
        guard size <= maximumVolumeSize else {
            throw EngineError(.invalidArgument, "volume size \(size) exceeds the maximum of 256 TiB")
        }
    }
}

extension Pool {
    /// One word for the slot files' write modes: a refusal anywhere wins, then buffered, then direct.
    static func dataWriteMode(_ modes: [StorageWriteMode]) -> StorageWriteMode {
        if modes.contains(.directRefused) { return .directRefused }
        if modes.isEmpty || modes.contains(.buffered) { return .buffered }
        if modes.contains(.writeThrough) { return .writeThrough }
        return .direct
    }
}
