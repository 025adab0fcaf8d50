import CairnIO
import Logging
import Synchronization

/// `pool.volumes`: creating, deleting, resizing, renaming, cloning and listing volumes, and the sessions
/// attached to them (`Volumes/`). Owns no state of its own: volume records live in `PoolState`, under
/// the pool mutex.
///
/// Core calls it uses: `monitor` and `state`, `checkWritable()`, `flush()`, `slotFile(forChunkSize:)`,
/// `discard(volumeID:...limit:)` (shrinking), and the clone groups' `refuse(_:of:)`.
public final class VolumeCatalog: Sendable {
    unowned let pool: Pool

    init(pool: Pool) { self.pool = pool }

    /// Largest volume: 256 TiB. The in-memory map grows with written data, not with size, but a bound
    /// keeps chunk arithmetic far from overflow and catches unit mistakes ("1P" for "1G").
    public static let maximumVolumeSize: UInt64 = 256 << 40
    /// Volume sizes are whole 512-byte sectors: every NBD client and guest expects that.
    public static let sizeAlignment: UInt64 = 512

    /// Creates an empty thin volume; it costs no space until written.
    @discardableResult
    public func create(name: String, size: UInt64, chunkSize: UInt32? = nil, preserveStore: String? = nil) throws
        -> VolumeInfo
    {
        try NameRules.validate(name)
        try Self.validateSize(size)
        let geometry = try ChunkGeometry(chunkSize: chunkSize ?? ChunkGeometry.defaultChunkSize)
        let info = try pool.monitor.withLock { () -> VolumeInfo in
            try pool.checkWritable()
            guard pool.state.volumeIDs[name] == nil else {
                throw EngineError(.alreadyExists, "volume '\(name)' already exists")
            }
            if let preserveStore, pool.state.stores[preserveStore] == nil {
                throw EngineError(.notFound, "store '\(preserveStore)' does not exist; add it with `cairn pool store add`")
            }
            let fileID = try pool.slotFile(forChunkSize: geometry.chunkSize)
            let id = pool.state.nextVolumeID
            pool.state.nextVolumeID += 1
            let record = VolumeRecord(
                id: id, name: name, size: size, chunkSize: geometry.chunkSize, epoch: 1, parent: nil,
                createdAt: Pool.now(), preserveStore: preserveStore)
            if preserveStore != nil { pool.stores.noteInUse() }
            pool.state.volumes[id] = VolumeState(record: record, geometry: geometry, slotFile: fileID)
            pool.state.volumeIDs[name] = id
            pool.state.dirty.volumes.insert(id)
            return self.info(of: pool.state.volumes[id]!)
        }
        try pool.flush()
        pool.logger.info("volume created", metadata: ["volume": "\(name)", "size": "\(size)"])
        return info
    }

    public func list() -> [VolumeInfo] {
        pool.monitor.withLock {
            pool.state.volumes.values.sorted { $0.record.name < $1.record.name }.map { info(of: $0) }
        }
    }

    public func info(named name: String) throws -> VolumeInfo {
        try pool.monitor.withLock { info(of: pool.state.volumes[try pool.state.volumeID(named: name)]!) }
    }

    /// Grows or shrinks a volume. Shrinking below written data is refused unless `force`, which discards
    /// the data past the new end (snapshots keep theirs).
    @discardableResult
    public func resize(name: String, size: UInt64, force: Bool = false) throws -> VolumeInfo {
        try Self.validateSize(size)
        let id = try pool.monitor.withLock { () -> UInt64 in
            try pool.checkWritable()
            let id = try pool.state.volumeID(named: name)
            let volume = pool.state.volumes[id]!
            if size != volume.record.size { try pool.cloneGroups.refuse(.resize, of: id) }
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
        let current = try pool.monitor.withLock { pool.state.volumes[id]!.record.size }
        if size < current {
            // Discard first, then cut: a concurrent write past the new end fails its bounds check
            // once the size changes, and nothing it wrote before survives the discard.
            try pool.monitor.withLock { pool.state.volumes[id]!.record.size = size }
            try pool.discard(
                volumeID: id, offset: size, length: current - size, mode: .zero, fua: false, limit: current)
        } else {
            try pool.monitor.withLock { pool.state.volumes[id]!.record.size = size }
        }
        let info = try pool.monitor.withLock { () -> VolumeInfo in
            guard pool.state.volumes[id] != nil else { throw EngineError(.notFound, "volume '\(name)' was deleted") }
            pool.state.dirty.volumes.insert(id)
            return self.info(of: pool.state.volumes[id]!)
        }
        try pool.flush()
        pool.logger.info("volume resized", metadata: ["volume": "\(name)", "size": "\(size)"])
        return info
    }

    @discardableResult
    public func rename(from name: String, to newName: String) throws -> VolumeInfo {
        try NameRules.validate(newName)
        let info = try pool.monitor.withLock { () -> VolumeInfo in
            try pool.checkWritable()
            let id = try pool.state.volumeID(named: name)
            guard name != newName else { return self.info(of: pool.state.volumes[id]!) }
            guard pool.state.volumeIDs[newName] == nil else {
                throw EngineError(.alreadyExists, "volume '\(newName)' already exists")
            }
            pool.state.volumeIDs[name] = nil
            pool.state.volumeIDs[newName] = id
            pool.state.volumes[id]!.record.name = newName
            pool.state.dirty.volumes.insert(id)
            return self.info(of: pool.state.volumes[id]!)
        }
        try pool.flush()
        pool.logger.info("volume renamed", metadata: ["volume": "\(name)", "to": "\(newName)"])
        return info
    }

    /// Deletes a volume and gives its space back. Refused while sessions are attached or snapshots
    /// exist, unless `force`.
    public func delete(name: String, force: Bool = false) throws {
        try pool.monitor.withLock {
            try pool.checkWritable()
            let id = try pool.state.volumeID(named: name)
            let volume = pool.state.volumes[id]!
            try pool.cloneGroups.refuse(.delete, of: id)
            if let child = pool.state.volumes.values.first(where: { $0.record.parent?.volumeID == id }) {
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
            while !volume.locks.isEmpty || volume.writesInFlight > 0 { pool.monitor.wait() }
            for list in volume.map.values {
                for version in list.versions { pool.state.release(version.slot) }
            }
            pool.state.volumes[id] = nil
            pool.state.volumeIDs[name] = nil
            pool.state.dirty.volumes.remove(id)
            pool.state.dirty.deletedVolumes.append(id)
        }
        try pool.flush()
        pool.logger.info("volume deleted", metadata: ["volume": "\(name)"])
    }

    /// Creates a writable clone of a snapshot: a new volume that reads the snapshot wherever it has not
    /// been written. O(1); the snapshot cannot be deleted while the clone exists.
    @discardableResult
    public func clone(volume name: String, snapshot snapshotName: String, as cloneName: String) throws
        -> VolumeInfo
    {
        try NameRules.validate(cloneName)
        let info = try pool.monitor.withLock { () -> VolumeInfo in
            try pool.checkWritable()
            let source = try pool.state.volume(named: name)
            let snapshot = try source.snapshot(named: snapshotName)
            guard pool.state.volumeIDs[cloneName] == nil else {
                throw EngineError(.alreadyExists, "volume '\(cloneName)' already exists")
            }
            let id = pool.state.nextVolumeID
            pool.state.nextVolumeID += 1
            let record = VolumeRecord(
                id: id, name: cloneName, size: snapshot.size, chunkSize: source.record.chunkSize, epoch: 1,
                parent: ParentLink(volumeID: source.id, epoch: snapshot.epoch), createdAt: Pool.now())
            let clone = VolumeState(record: record, geometry: source.geometry, slotFile: source.slotFile)
            pool.state.volumes[id] = clone
            pool.state.volumeIDs[cloneName] = id
            pool.state.dirty.volumes.insert(id)
            return self.info(of: clone)
        }
        try pool.flush()
        pool.logger.info("volume cloned", metadata: ["volume": "\(cloneName)", "origin": "\(name)@\(snapshotName)"])
        return info
    }

    /// Records that a session uses the volume; `delete` and shrinking refuse while any is attached.
    public func attach(volumeID: UInt64) throws {
        try pool.monitor.withLock {
            _ = try pool.state.liveVolume(volumeID)
            pool.state.volumes[volumeID]!.attachments += 1
        }
    }

    public func detach(volumeID: UInt64) {
        pool.monitor.withLock {
            if pool.state.volumes[volumeID] != nil { pool.state.volumes[volumeID]!.attachments -= 1 }
        }
    }

    /// Current size of a volume (NBD export size at attach time).
    public func size(volumeID: UInt64) throws -> UInt64 {
        try pool.monitor.withLock { try pool.liveVolumeSize(volumeID) }
    }

    /// Resolves a volume name to its id (stable across renames).
    public func id(named name: String) throws -> UInt64 {
        try pool.monitor.withLock { try pool.state.volumeID(named: name) }
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
        if let parent = volume.record.parent, let source = pool.state.volumes[parent.volumeID] {
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
        for chunk in pool.candidateChunks(volume, from: g.chunk(containing: offset), through: .max, limit: .max) {
            var mask = pool.state.resolve(volume, chunk, wanted: g.fullMask).dataMask
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
