/// How a volume's byte range is cut into chunks and sub-blocks.
///
/// A chunk is the unit of mapping, sharing and copy-on-write; a sub-block is the unit of the data
/// mask (see docs/ARCHITECTURE.md, "Chunks, slots and sub-blocks").
public struct ChunkGeometry: Sendable, Hashable {
    /// Smallest chunk: one page, the granularity of the page cache and of reflink.
    public static let minimumChunkSize: UInt32 = 4096
    /// Largest chunk: beyond this a sub-block (chunk / 64) gets so large that small writes pay for it.
    public static let maximumChunkSize: UInt32 = 4 << 20
    /// Default chunk: dm-thin's and qcow2's default too; small enough that breaking sharing by copying
    /// the unwritten sub-blocks stays cheap without reflink.
    public static let defaultChunkSize: UInt32 = 64 << 10
    /// Sub-blocks are never smaller than a page.
    public static let minimumSubBlockSize: UInt32 = 4096
    /// One bit per sub-block in a `UInt64` data mask.
    public static let maximumSubBlocksPerChunk: UInt32 = 64

    public let chunkSize: UInt32
    public let subBlockSize: UInt32

    /// Validates `chunkSize` (a power of two within the supported range).
    public init(chunkSize: UInt32) throws {
        guard chunkSize.nonzeroBitCount == 1,
            chunkSize >= Self.minimumChunkSize, chunkSize <= Self.maximumChunkSize
        else {
            throw EngineError(
                .invalidArgument,
                "chunk size \(chunkSize) is not supported: use a power of two from "
                    + "\(Self.minimumChunkSize / 1024) KiB to \(Self.maximumChunkSize >> 20) MiB")
        }
        self.chunkSize = chunkSize
        self.subBlockSize = max(Self.minimumSubBlockSize, chunkSize / Self.maximumSubBlocksPerChunk)
    }

    public var subBlocksPerChunk: Int { Int(chunkSize / subBlockSize) }

    /// Mask with every sub-block of a chunk set.
    public var fullMask: UInt64 {
        subBlocksPerChunk == 64 ? ~0 : (UInt64(1) << UInt64(subBlocksPerChunk)) - 1
    }

    @inline(__always) public func chunk(containing offset: UInt64) -> UInt64 { offset / UInt64(chunkSize) }
    @inline(__always) public func start(of chunk: UInt64) -> UInt64 { chunk * UInt64(chunkSize) }

    /// Number of chunks needed to cover `size` bytes.
    public func chunkCount(for size: UInt64) -> UInt64 { (size + UInt64(chunkSize) - 1) / UInt64(chunkSize) }

    /// Sub-blocks touched by the byte range `[from, to)` relative to a chunk start.
    public func touchedMask(from: UInt32, to: UInt32) -> UInt64 {
        guard to > from else { return 0 }
        let first = from / subBlockSize
        let last = (to - 1) / subBlockSize
        return Self.bits(first, last)
    }

    /// Sub-blocks entirely inside `[from, to)` relative to a chunk start.
    public func coveredMask(from: UInt32, to: UInt32) -> UInt64 {
        let first = (from + subBlockSize - 1) / subBlockSize
        let endExclusive = to / subBlockSize
        guard endExclusive > first else { return 0 }
        return Self.bits(first, endExclusive - 1)
    }

    /// Bits `first...last` set.
    @inline(__always) static func bits(_ first: UInt32, _ last: UInt32) -> UInt64 {
        let width = last - first + 1
        let run: UInt64 = width == 64 ? ~0 : (UInt64(1) << UInt64(width)) - 1
        return run << UInt64(first)
    }
}

extension UInt64 {
    /// Calls `body(first, count)` for each run of consecutive set bits, lowest first.
    @inline(__always)
    func forEachRun(_ body: (Int, Int) throws -> Void) rethrows {
        var rest = self
        while rest != 0 {
            let first = rest.trailingZeroBitCount
            let shifted = rest >> UInt64(first)
            let count = (~shifted).trailingZeroBitCount
            try body(first, count)
            rest &= count + first >= 64 ? 0 : ~0 << UInt64(count + first)
        }
    }
}
