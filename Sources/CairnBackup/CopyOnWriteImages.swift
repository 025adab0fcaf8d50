import CairnEngine

/// `--method cow` (one-way mirror figs. 21-27) on the engine's own copy-on-write: image B is the volume, image A
/// is a writable clone of a snapshot taken at T. The clone's map is A's lookup table: a block A wrote
/// is found there, any other falls through to the snapshot, whose old contents the engine preserved
/// when B overwrote them (the "copy the old data to A before B's first write" of fig. 27, done by
/// keeping the old version rather than copying it).
final class CopyOnWriteImages: MirrorImages {
    let pool: Pool
    let volumeID: UInt64
    /// The clone holding A's own writes.
    let cloneID: UInt64
    let cloneName: String
    var method: BackupMethod { .cow }
    var imageAVolumeID: UInt64 { cloneID }

    init(pool: Pool, volumeID: UInt64, cloneID: UInt64, cloneName: String) {
        self.pool = pool
        self.volumeID = volumeID
        self.cloneID = cloneID
        self.cloneName = cloneName
    }

    func read(_ side: MirrorSide, offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws -> [ReadExtent] {
        try pool.read(volumeID: side == .a ? cloneID : volumeID, offset: offset, into: buffer)
    }

    func write(_ side: MirrorSide, offset: UInt64, source: WriteSource, fua: Bool) throws -> Bool {
        let owedByA = side == .a
            ? try pool.writeDeferringCommit(volumeID: cloneID, offset: offset, source: source, fua: fua) : false
        return try pool.writeDeferringCommit(volumeID: volumeID, offset: offset, source: source, fua: fua) || owedByA
    }

    func discard(_ side: MirrorSide, offset: UInt64, length: UInt64, mode: DiscardMode, fua: Bool) throws {
        if side == .a { try pool.discard(volumeID: cloneID, offset: offset, length: length, mode: mode, fua: fua) }
        try pool.discard(volumeID: volumeID, offset: offset, length: length, mode: mode, fua: fua)
    }

    func allocation(_ side: MirrorSide, offset: UInt64, length: UInt64, maximumExtents: Int) throws -> [AllocationExtent] {
        // The clone's map falls through to the T snapshot, so the engine answers for A as it reads.
        try pool.snapshots.allocationExtents(
            volumeID: side == .a ? cloneID : volumeID, offset: offset, length: length, maximumExtents: maximumExtents)
    }

    func copyAndWrite(_ side: MirrorSide, _ command: CopyAndWrite, fua: Bool) throws {
        guard side == .a else { return try command.run(on: volumeID, pool: pool, fua: fua) }
        try copyAndWrite(command, on: cloneID, thenWriteTo: volumeID, pool: pool, fua: fua)
    }

    func flush() throws { try pool.flush() }

    func dissolve(locks: RangeLockTable) throws {}

    func discardImages() throws {
        try pool.volumes.delete(name: cloneName, force: true)
    }
}

/// `--method mirror` (one-way mirror figs. 9-13): image A is a full, independent copy of the volume. Before the
/// split every write goes to both (a RAID-1 mirror) while a background copy fills the copy; at T the
/// mirror breaks: old sessions keep writing both, new ones only the volume.
final class FullMirrorImages: MirrorImages, @unchecked Sendable {
    // @unchecked: `broken` changes only under the route's hold, when no request is in flight.
    let pool: Pool
    let volumeID: UInt64
    let copyID: UInt64
    let copyName: String
    /// False while the mirror is being built (every write goes to both images); set at T under the
    /// route's hold, so I/O never sees it change mid-request.
    var broken = false
    var method: BackupMethod { .mirror }
    var imageAVolumeID: UInt64 { copyID }

    init(pool: Pool, volumeID: UInt64, copyID: UInt64, copyName: String) {
        self.pool = pool
        self.volumeID = volumeID
        self.copyID = copyID
        self.copyName = copyName
    }

    func read(_ side: MirrorSide, offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws -> [ReadExtent] {
        try pool.read(volumeID: side == .a && broken ? copyID : volumeID, offset: offset, into: buffer)
    }

    func write(_ side: MirrorSide, offset: UInt64, source: WriteSource, fua: Bool) throws -> Bool {
        let owedByCopy = side == .a || !broken
            ? try pool.writeDeferringCommit(volumeID: copyID, offset: offset, source: source, fua: fua) : false
        return try pool.writeDeferringCommit(volumeID: volumeID, offset: offset, source: source, fua: fua) || owedByCopy
    }

    func discard(_ side: MirrorSide, offset: UInt64, length: UInt64, mode: DiscardMode, fua: Bool) throws {
        if side == .a || !broken {
            try pool.discard(volumeID: copyID, offset: offset, length: length, mode: mode, fua: fua)
        }
        try pool.discard(volumeID: volumeID, offset: offset, length: length, mode: mode, fua: fua)
    }

    func allocation(_ side: MirrorSide, offset: UInt64, length: UInt64, maximumExtents: Int) throws -> [AllocationExtent] {
        try pool.snapshots.allocationExtents(
            volumeID: side == .a && broken ? copyID : volumeID, offset: offset, length: length,
            maximumExtents: maximumExtents)
    }

    func copyAndWrite(_ side: MirrorSide, _ command: CopyAndWrite, fua: Bool) throws {
        switch (side, broken) {
        case (.b, true): try command.run(on: volumeID, pool: pool, fua: fua)
        case (.a, true): try copyAndWrite(command, on: copyID, thenWriteTo: volumeID, pool: pool, fua: fua)
        // Still building: the session reads the volume, and every write reaches the copy too (the
        // background copy of this chunk waits for the range lock the caller holds).
        case (_, false): try copyAndWrite(command, on: volumeID, thenWriteTo: copyID, pool: pool, fua: fua)
        }
    }

    /// Copies the volume into the mirror copy, one lock block at a time under its range lock, so that a
    /// write (which goes to both) never interleaves with the copy of its block. Returns bytes copied.
    func synchronize(locks: RangeLockTable, size: UInt64, progress: (UInt64) -> Void) throws {
        var buffer = [UInt8](repeating: 0, count: Int(RangeLockTable.blockSize))
        var offset: UInt64 = 0
        while offset < size {
            let length = min(RangeLockTable.blockSize, size - offset)
            try locks.withRange(offset: offset, length: length, exclusive: true) {
                try buffer.withUnsafeMutableBytes { raw in
                    let target = UnsafeMutableRawBufferPointer(rebasing: raw[0..<Int(length)])
                    let extents = try pool.read(volumeID: volumeID, offset: offset, into: target)
                    for extent in extents where !extent.isHole {
                        let start = Int(extent.offset - offset)
                        try pool.write(
                            volumeID: copyID, offset: extent.offset,
                            source: .bytes(UnsafeRawBufferPointer(rebasing: target[start..<start + Int(extent.length)])),
                            fua: false)
                    }
                }
            }
            offset += length
            progress(offset)
        }
    }

    func flush() throws { try pool.flush() }

    func dissolve(locks: RangeLockTable) throws {}

    func discardImages() throws {
        try pool.volumes.delete(name: copyName, force: true)
    }
}
