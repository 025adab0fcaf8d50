import CairnEngine

/// The storage of a one-way mirror's two images, over pool volumes. Called with the range lock of the
/// touched blocks held (exclusive for writes and discards), so an implementation may read-modify-write
/// whole blocks and keep its lookup table consistent without locks of its own.
protocol MirrorImages: AnyObject, Sendable {
    var method: BackupMethod { get }
    /// Reads image `side`.
    func read(_ side: MirrorSide, offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws -> [ReadExtent]
    /// Writes to image `side`: on A the data reaches both images before this returns; on B only B.
    /// With `fua`, returns true when a pool commit is still owed (the caller's group commit, before the
    /// reply), as `Pool.writeDeferringCommit` does: no I/O thread waits for it. Whatever the images keep
    /// outside the pool (the log method's journal) is already durable when this returns.
    func write(_ side: MirrorSide, offset: UInt64, source: WriteSource, fua: Bool) throws -> Bool
    /// True when FLUSH needs more than a pool commit (the log method's journal): then it goes through
    /// `flush()` on an I/O thread; otherwise the group commit answers it, as on any other volume.
    var flushesOutsidePool: Bool { get }
    /// TRIM / WRITE_ZEROES on image `side`, with the same reach as `write`.
    func discard(_ side: MirrorSide, offset: UInt64, length: UInt64, mode: DiscardMode, fua: Bool) throws
    /// NBD `base:allocation` of image `side`: holes where that image stores nothing and reads zeros.
    /// Map lookups only. The first extent starts at `offset`; at most `maximumExtents` extents.
    func allocation(_ side: MirrorSide, offset: UInt64, length: UInt64, maximumExtents: Int) throws -> [AllocationExtent]
    /// COPY_AND_WRITE on image `side`, with the same reach as `write`: on A the target chunk
    /// A ends up with reaches B too, byte for byte (B's own source may differ); on B only B. Called with
    /// the source's range locks held shared and the target's exclusive. A bad argument changes nothing.
    func copyAndWrite(_ side: MirrorSide, _ command: CopyAndWrite, fua: Bool) throws
    /// The volume whose allocation describes image A (what the archive leaves out as holes), and which
    /// the archiver reads once A is frozen.
    var imageAVolumeID: UInt64 { get }
    /// FLUSH from a session of the split volume: everything completed before is durable, in the pool
    /// and in whatever the images keep outside it (the log method's table).
    func flush() throws
    /// Called under the route's hold (no request in flight) just before `dissolve`.
    func prepareDissolve()
    /// Everything needed before the images can be dropped (the log method merges its log into the
    /// volume here, block by block under the range locks, while sessions keep running).
    func dissolve(locks: RangeLockTable) throws
    /// After `dissolve`, before the route goes: drop any durable lookup table, so that a crash from
    /// here on never merges a log that B stopped updating.
    func forgetTable() throws
    /// Deletes whatever storage the images added to the pool.
    func discardImages() throws
}

extension MirrorImages {
    func prepareDissolve() {}
    func forgetTable() throws {}
    var flushesOutsidePool: Bool { false }

    /// COPY_AND_WRITE done inside the engine on `primary` (the image the session sees), then the target
    /// chunk it produced written to `other` as plain data: the second image gets exactly the first's
    /// bytes, as an A write does, whatever `other` holds at the source.
    func copyAndWrite(_ command: CopyAndWrite, on primary: UInt64, thenWriteTo other: UInt64, pool: Pool, fua: Bool) throws {
        try command.run(on: primary, pool: pool, fua: fua)
        let chunk = try command.readTarget(of: primary, pool: pool)
        try chunk.withUnsafeBytes { try pool.write(volumeID: other, offset: command.target, source: .bytes($0), fua: fua) }
    }
}

/// One COPY_AND_WRITE request: the `copySize` bytes at `target` become those at `source` with
/// `buffer` written `bufferOffset` bytes in.
public struct CopyAndWrite {
    public var source: UInt64
    public var target: UInt64
    public var copySize: UInt32
    public var buffer: UnsafeRawBufferPointer
    public var bufferOffset: UInt32

    public init(source: UInt64, target: UInt64, copySize: UInt32, buffer: UnsafeRawBufferPointer, bufferOffset: UInt32) {
        self.source = source
        self.target = target
        self.copySize = copySize
        self.buffer = buffer
        self.bufferOffset = bufferOffset
    }

    var sourceRange: Range<UInt64> { source..<source + UInt64(copySize) }
    var targetRange: Range<UInt64> { target..<target + UInt64(copySize) }

    /// The engine's COPY_AND_WRITE inside `volumeID` (which checks every argument before changing anything).
    func run(on volumeID: UInt64, pool: Pool, fua: Bool) throws {
        try pool.copyAndWrite(
            volumeID: volumeID, source: source, target: target, copySize: copySize, buffer: buffer,
            bufferOffset: bufferOffset, fua: fua)
    }

    /// The target chunk as `volumeID` reads it now (holes as zeros).
    func readTarget(of volumeID: UInt64, pool: Pool) throws -> [UInt8] {
        var chunk = [UInt8](repeating: 0, count: Int(copySize))
        _ = try chunk.withUnsafeMutableBytes { try pool.read(volumeID: volumeID, offset: target, into: $0) }
        return chunk
    }

    /// The engine's checks, for an image that does the copy outside the engine: whole chunks of the
    /// volume, aligned, inside it, the buffer inside the chunk.
    func check(chunkSize: UInt32, volumeSize: UInt64) throws {
        guard copySize == chunkSize else {
            throw EngineError(
                .invalidArgument,
                "COPY_AND_WRITE copies whole chunks: the copy size must be \(chunkSize), not \(copySize)")
        }
        guard source % UInt64(chunkSize) == 0, target % UInt64(chunkSize) == 0 else {
            throw EngineError(.invalidArgument, "COPY_AND_WRITE source and target must be chunk-aligned")
        }
        for start in [source, target] where start >= volumeSize || UInt64(copySize) > volumeSize - start {
            throw EngineError(.outOfRange, "COPY_AND_WRITE range at \(start) is past the end of the volume")
        }
        guard UInt64(bufferOffset) + UInt64(buffer.count) <= UInt64(copySize), !buffer.isEmpty else {
            throw EngineError(.invalidArgument, "COPY_AND_WRITE buffer does not fit inside the chunk")
        }
    }
}

extension WriteSource {
    /// The part of this write from `start` (relative to the write) of `length` bytes.
    func slice(from start: Int, length: Int) -> WriteSource {
        switch self {
        case .bytes(let buffer): .bytes(UnsafeRawBufferPointer(rebasing: buffer[start..<start + length]))
        case .zeros: .zeros(length: UInt64(length))
        }
    }

    var byteCount: UInt64 {
        switch self {
        case .bytes(let buffer): UInt64(buffer.count)
        case .zeros(let length): length
        }
    }
}
