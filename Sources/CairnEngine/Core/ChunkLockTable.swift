/// Per-volume chunk locks, kept apart from the data (the "locks separate from the data" of the one-way-mirror design).
///
/// Reads and in-place writes hold a chunk shared; anything that changes a chunk's mapping holds it
/// exclusive. Callers take every lock a request needs in one step under the pool mutex, or none and
/// wait, so lock order cannot deadlock.
struct ChunkLockTable {
    /// Positive: number of shared holders. `exclusiveMark`: one exclusive holder.
    private var holders: [UInt64: Int32] = [:]
    private static let exclusiveMark: Int32 = -1

    var isEmpty: Bool { holders.isEmpty }

    func isAvailable(_ chunk: UInt64, exclusive: Bool) -> Bool {
        guard let current = holders[chunk] else { return true }
        return !exclusive && current > 0
    }

    mutating func acquire(_ chunk: UInt64, exclusive: Bool) {
        if exclusive {
            precondition(holders[chunk] == nil)
            holders[chunk] = Self.exclusiveMark
        } else {
            let current = holders[chunk] ?? 0
            precondition(current >= 0)
            holders[chunk] = current + 1
        }
    }

    mutating func release(_ chunk: UInt64, exclusive: Bool) {
        guard let current = holders[chunk] else { preconditionFailure("release of an unheld chunk lock") }
        if exclusive || current == 1 {
            precondition(exclusive == (current == Self.exclusiveMark))
            holders[chunk] = nil
        } else {
            holders[chunk] = current - 1
        }
    }
}
