import CairnIO
import Glibc
import Synchronization

extension RadosSlotFile {
    /// The first non-zero byte at or after `offset`, or nil. A RADOS object has no holes to seek to: a
    /// range zeroed inside an object (a freed chunk's punch) still exists and reads as zeros, so data
    /// is found by reading the objects that exist (absent ones are skipped unread). Zeros already read
    /// are remembered until the next change to the file, so pool check's walk over the free slots, in
    /// ascending order, reads each object once.
    public func nextData(from offset: UInt64) throws -> UInt64? {
        let (size, generation, skipTo) = state.withLock { state -> (UInt64, UInt64, UInt64?) in
            let known = state.knownZero.flatMap { $0.generation == state.generation ? $0.range : nil }
            return (state.size, state.generation, known.flatMap { $0.contains(offset) ? $0.upperBound : nil })
        }
        let reserved = recorded.withLock { $0.reservedObjects }
        var position = skipTo ?? offset
        var buffer = [UInt8](repeating: 0, count: Int(objectSize))
        var found: UInt64?
        while found == nil, position < size, position / objectSize < reserved {
            let inObject = position % objectSize
            let length = Int(min(objectSize - inObject, size - position))
            let got = try buffer.withUnsafeMutableBytes { whole -> Int in
                let piece = UnsafeMutableRawBufferPointer(rebasing: whole[0..<length])
                do {
                    return Int(try io.aioRead(objectName(position / objectSize), into: piece, at: inObject).wait())
                } catch let error as RadosError where error.errno == ENOENT {
                    return 0
                } catch {
                    throw ioError(error, "read")
                }
            }
            if let first = buffer[0..<got].firstIndex(where: { $0 != 0 }) {
                found = position + UInt64(first)
            } else {
                position += UInt64(length)
            }
        }
        let zeroEnd = found ?? position
        state.withLock { state in
            if zeroEnd > offset { state.knownZero = (offset..<zeroEnd, generation) }
        }
        return found
    }
}
