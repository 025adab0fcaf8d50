import CairnIO

/// The one-way-mirror design's "locks separate from the data" (figs. 13, 19-20, 26-27): one lock per block of the
/// volume, shared by both images, so that a write of an old session (to A and B) and a write or read
/// of a new session (B) on the same blocks never interleave. Reads hold blocks shared, writes
/// exclusive. A request takes every block it needs at once or waits holding none, so lock order
/// cannot deadlock. Not part of either image, never backed up.
public final class RangeLockTable: @unchecked Sendable {
    // @unchecked: `holders` is only touched with `monitor` held.
    /// Bytes per lock. Coarser than a 4 KiB sub-block so that a 1 MiB request takes 16 locks, not
    /// 256; fine enough that unrelated small writes rarely share one.
    public static let blockSize: UInt64 = 64 << 10
    private static let exclusiveMark: Int32 = -1

    private let monitor = Monitor()
    private var holders: [UInt64: Int32] = [:]

    public init() {}

    /// The blocks `[offset, offset + length)` touches.
    static func blocks(offset: UInt64, length: UInt64) -> ClosedRange<UInt64> {
        let first = offset / blockSize
        let last = (offset + max(length, 1) - 1) / blockSize
        return first...last
    }

    /// Runs `body` holding the blocks of the range (exclusive for writes).
    public func withRange<T>(offset: UInt64, length: UInt64, exclusive: Bool, _ body: () throws -> T) rethrows -> T {
        let blocks = Self.blocks(offset: offset, length: length)
        monitor.withLock {
            while !blocks.allSatisfy({ isAvailable($0, exclusive: exclusive) }) { monitor.wait() }
            for block in blocks {
                holders[block] = exclusive ? Self.exclusiveMark : (holders[block] ?? 0) + 1
            }
        }
        defer {
            monitor.withLock {
                for block in blocks {
                    let current = holders[block]!
                    holders[block] = (exclusive || current == 1) ? nil : current - 1
                }
                monitor.broadcast()
            }
        }
        return try body()
    }

    /// Runs `body` holding the blocks of `shared` shared and those of `exclusive` exclusive (a block in
    /// both is held exclusive): COPY_AND_WRITE reads its source chunk and writes its target chunk.
    public func withRanges<T>(shared: Range<UInt64>, exclusive: Range<UInt64>, _ body: () throws -> T) rethrows -> T {
        let written = Self.blocks(offset: exclusive.lowerBound, length: UInt64(exclusive.count))
        let read = Self.blocks(offset: shared.lowerBound, length: UInt64(shared.count)).filter { !written.contains($0) }
        monitor.withLock {
            while !(written.allSatisfy({ isAvailable($0, exclusive: true) })
                && read.allSatisfy({ isAvailable($0, exclusive: false) }))
            {
                monitor.wait()
            }
            for block in written { holders[block] = Self.exclusiveMark }
            for block in read { holders[block] = (holders[block] ?? 0) + 1 }
        }
        defer {
            monitor.withLock {
                for block in written { holders[block] = nil }
                for block in read {
                    let current = holders[block]!
                    holders[block] = current == 1 ? nil : current - 1
                }
                monitor.broadcast()
            }
        }
        return try body()
    }

    /// True when no block is held (tests).
    public var isIdle: Bool { monitor.withLock { holders.isEmpty } }

    private func isAvailable(_ block: UInt64, exclusive: Bool) -> Bool {
        guard let current = holders[block] else { return true }
        return !exclusive && current > 0
    }
}
