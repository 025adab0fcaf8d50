import CairnEngine

/// The storage of a one-way mirror's two images, over pool volumes. Called with the range lock of the
/// touched blocks held (exclusive for writes and discards), so an implementation may read-modify-write
/// whole blocks and keep its lookup table consistent without locks of its own.
protocol MirrorImages: AnyObject, Sendable {
    var method: BackupMethod { get }
    /// Reads image `side`.
    func read(_ side: MirrorSide, offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws -> [ReadExtent]
    /// Writes to image `side`: on A the data reaches both images before this returns; on B only B.
    func write(_ side: MirrorSide, offset: UInt64, source: WriteSource, fua: Bool) throws
    /// TRIM / WRITE_ZEROES on image `side`, with the same reach as `write`.
    func discard(_ side: MirrorSide, offset: UInt64, length: UInt64, mode: DiscardMode, fua: Bool) throws
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
    func forgetTable()
    /// Deletes whatever storage the images added to the pool.
    func discardImages() throws
}

extension MirrorImages {
    func prepareDissolve() {}
    func forgetTable() {}
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
