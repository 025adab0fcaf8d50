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
    /// Runs of zeros at least this long inside data are left out of a full archive (holes cost nothing
    /// even where a guest wrote zeros rather than trimmed).
    static let zeroRunSize = 64 << 10
    /// Pause per started MiB read (`cairn serve --backup-archive-delay-ms`): a rate limit, and what lets a
    /// test stop the daemon in the middle of an archive. Zero by default.
    var readDelayPerMiB: Duration = .zero

    /// The ranges a full archive covers: everything the image has data in.
    func allocatedRanges() throws -> [Range<UInt64>] {
        var ranges: [Range<UInt64>] = []
        var position: UInt64 = 0
        while position < size {
            let extents = try pool.snapshots.allocationExtents(
                volumeID: volumeID, offset: position, length: size - position)
            guard !extents.isEmpty else { break }
            for extent in extents {
                if !extent.isHole { Self.add(position..<position + extent.length, to: &ranges) }
                position += extent.length
            }
        }
        return ranges
    }

    static func seconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
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
    /// false from `shouldContinue` stops with an error. Reading and sealing run ahead on reader threads
    /// (`ArchivePipeline`); records reach `writer` in volume order on this thread.
    func write(
        ranges: [Range<UInt64>], incremental: Bool, to writer: ArchiveWriter, progress: (UInt64) -> Void,
        shouldContinue: () -> Bool
    ) throws {
        let pool = pool
        let volumeID = volumeID
        let delay = readDelayPerMiB
        let pipeline = ArchivePipeline(pieces: ArchivePipeline.pieces(of: ranges)) { piece, buffer in
            if delay > .zero {
                Thread.sleep(forTimeInterval: Self.seconds(delay * Int((piece.length + (1 << 20) - 1) >> 20)))
            }
            let extents = try pool.read(volumeID: volumeID, offset: piece.offset, into: buffer)
            return Self.records(of: extents, in: UnsafeRawBufferPointer(buffer), at: piece.offset, incremental: incremental)
        }
        var done: UInt64 = 0
        try pipeline.run { piece, buffer, records in
            guard shouldContinue() else { throw EngineError(.busy, "the backup was cancelled") }
            for record in records {
                switch record {
                case .data(let seal, let start):
                    try writer.appendData(
                        sealed: seal, payload: UnsafeRawBufferPointer(rebasing: buffer[start..<start + seal.length]))
                case .zero(let offset, let length):
                    try writer.appendZero(offset: offset, length: length)
                }
            }
            done += UInt64(piece.length)
            progress(done)
        }
    }

    /// The records of one piece read at `offset`: its data extents sealed, with runs of zeros of at
    /// least `zeroRunSize` cut out (left out of a full archive, ZERO records in an incremental one, as
    /// holes are). Adjacent ZERO ranges are merged into one record. Runs on a reader thread.
    static func records(
        of extents: [ReadExtent], in buffer: UnsafeRawBufferPointer, at offset: UInt64, incremental: Bool
    ) -> [ArchivePipeline.Record] {
        var records: [ArchivePipeline.Record] = []
        func zero(_ start: UInt64, _ length: UInt64) {
            guard incremental else { return }
            if case .zero(let last, let lastLength) = records.last, last + lastLength == start {
                records[records.count - 1] = .zero(offset: last, length: lastLength + length)
            } else {
                records.append(.zero(offset: start, length: length))
            }
        }
        func data(_ start: Int, _ end: Int) {
            guard end > start else { return }
            let payload = UnsafeRawBufferPointer(rebasing: buffer[start..<end])
            records.append(.data(ArchiveDataSeal(offset: offset + UInt64(start), payload: payload), start: start))
        }
        for extent in extents {
            let extentStart = Int(extent.offset - offset)
            if extent.isHole {
                zero(extent.offset, extent.length)
                continue
            }
            let extentEnd = extentStart + Int(extent.length)
            var runStart = extentStart
            var cursor = extentStart
            while cursor < extentEnd {
                let pieceEnd = min(extentEnd, cursor + zeroRunSize)
                if pieceEnd - cursor == zeroRunSize && isZero(UnsafeRawBufferPointer(rebasing: buffer[cursor..<pieceEnd])) {
                    data(runStart, cursor)
                    zero(offset + UInt64(cursor), UInt64(zeroRunSize))
                    runStart = pieceEnd
                }
                cursor = pieceEnd
            }
            data(runStart, extentEnd)
        }
        return records
    }

    /// True when every byte is zero: the first 16 bytes are, and the buffer equals itself shifted by 16
    /// (memcmp is vectorized; a byte loop is several times slower on data that is mostly zeros).
    static func isZero(_ bytes: UnsafeRawBufferPointer) -> Bool {
        let head = 16
        guard bytes.count > head else { return bytes.allSatisfy { $0 == 0 } }
        let base = bytes.baseAddress!
        return UnsafeRawBufferPointer(start: base, count: head).allSatisfy { $0 == 0 }
            && memcmp(base, base + head, bytes.count - head) == 0
    }
}
