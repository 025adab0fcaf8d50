import CairnArchive
import CairnEngine
import Foundation

/// Writes a frozen image A into an archive: every allocated extent (full), or every range that
/// changed since the base (incremental), in volume order. Reads go through the pool like any reader.
struct BackupArchiver {
    let pool: Pool
    /// The volume to read (image A) and its size.
    let volumeID: UInt64
    let size: UInt64
    /// Bytes read per engine call: large enough to stream, small enough to keep memory flat.
    static let readSize: UInt64 = 1 << 20
    /// Runs of zeros at least this long inside data are left out of a full archive (holes cost nothing
    /// even where a guest wrote zeros rather than trimmed).
    static let zeroRunSize = 64 << 10
    /// Fault-injection hook for crash tests: `CAIRN_TEST_ARCHIVE_DELAY_MS` slows every read so that a
    /// test can kill -9 the daemon while it archives. Unset (0) in production.
    static let testDelayMicroseconds: UInt32 =
        (UInt32(ProcessInfo.processInfo.environment["CAIRN_TEST_ARCHIVE_DELAY_MS"] ?? "") ?? 0) * 1000

    /// The ranges a full archive covers: everything the image has data in.
    func allocatedRanges() throws -> [Range<UInt64>] {
        var ranges: [Range<UInt64>] = []
        var position: UInt64 = 0
        while position < size {
            let extents = try pool.allocationExtents(volumeID: volumeID, offset: position, length: size - position)
            guard !extents.isEmpty else { break }
            for extent in extents {
                if !extent.isHole { Self.add(position..<position + extent.length, to: &ranges) }
                position += extent.length
            }
        }
        return ranges
    }

    /// Appends `range` to sorted `ranges`, merging with the last one when they touch.
    static func add(_ range: Range<UInt64>, to ranges: inout [Range<UInt64>]) {
        if let last = ranges.last, last.upperBound >= range.lowerBound {
            ranges[ranges.count - 1] = last.lowerBound..<max(last.upperBound, range.upperBound)
        } else {
            ranges.append(range)
        }
    }

    /// Sorted union of range lists.
    static func union(_ lists: [[Range<UInt64>]]) -> [Range<UInt64>] {
        var merged: [Range<UInt64>] = []
        for range in lists.joined().sorted(by: { $0.lowerBound < $1.lowerBound }) { add(range, to: &merged) }
        return merged
    }

    /// Writes `ranges` of the image. `incremental`: holes and zero runs are recorded as ZERO (they may
    /// have held data in the base); otherwise they are left out. `progress` gets bytes done; returning
    /// false from `shouldContinue` stops with an error.
    func write(
        ranges: [Range<UInt64>], incremental: Bool, to writer: ArchiveWriter, progress: (UInt64) -> Void,
        shouldContinue: () -> Bool
    ) throws {
        var buffer = [UInt8](repeating: 0, count: Int(Self.readSize))
        var done: UInt64 = 0
        for range in ranges {
            var position = range.lowerBound
            while position < range.upperBound {
                guard shouldContinue() else { throw EngineError(.busy, "the backup was cancelled") }
                let length = min(Self.readSize, range.upperBound - position)
                if Self.testDelayMicroseconds > 0 { usleep(Self.testDelayMicroseconds) }
                try buffer.withUnsafeMutableBytes { raw in
                    let target = UnsafeMutableRawBufferPointer(rebasing: raw[0..<Int(length)])
                    let extents = try pool.read(volumeID: volumeID, offset: position, into: target)
                    for extent in extents {
                        let start = Int(extent.offset - position)
                        if extent.isHole {
                            if incremental { try writer.appendZero(offset: extent.offset, length: extent.length) }
                            continue
                        }
                        try appendData(
                            UnsafeRawBufferPointer(rebasing: target[start..<start + Int(extent.length)]),
                            at: extent.offset, incremental: incremental, to: writer)
                    }
                }
                position += length
                done += length
                progress(done)
            }
        }
    }

    /// Data, with long runs of zeros turned into holes (full) or ZERO records (incremental).
    private func appendData(_ bytes: UnsafeRawBufferPointer, at offset: UInt64, incremental: Bool, to writer: ArchiveWriter)
        throws
    {
        var runStart = 0
        var cursor = 0
        func flushData(upTo end: Int) throws {
            if end > runStart {
                try writer.appendData(
                    offset: offset + UInt64(runStart), bytes: UnsafeRawBufferPointer(rebasing: bytes[runStart..<end]))
            }
        }
        while cursor < bytes.count {
            let pieceEnd = min(bytes.count, cursor + Self.zeroRunSize)
            let piece = UnsafeRawBufferPointer(rebasing: bytes[cursor..<pieceEnd])
            if pieceEnd - cursor == Self.zeroRunSize && piece.allSatisfy({ $0 == 0 }) {
                try flushData(upTo: cursor)
                if incremental { try writer.appendZero(offset: offset + UInt64(cursor), length: UInt64(pieceEnd - cursor)) }
                runStart = pieceEnd
            }
            cursor = pieceEnd
        }
        try flushData(upTo: bytes.count)
    }
}
