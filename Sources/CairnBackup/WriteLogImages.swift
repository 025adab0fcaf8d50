import CairnEngine
import CairnIO
import Foundation
import Glibc
import Synchronization

/// `--method log` (one-way mirror figs. 14-20): image A is the volume itself and holds the common data; image B
/// is the volume overlaid by a log volume, with a lookup table on B (`entries`, one per 4 KiB block)
/// saying which blocks B holds in the log.
///
/// - B write to a block without an entry: the block is copied from A into the log, the entry is added
///   (fig. 18) and the write goes to the log. With an entry: written to the log. New entries reach the
///   journal on the next FLUSH (or with a FUA write), after the pool commit that makes their log blocks
///   durable: a first write to a block costs one block copy, not a sync.
/// - A write: written to the volume. Where B has an entry, the design deletes it (fig. 16); here the
///   write goes to the log too and the entry stays, so entries only ever get added and the journal on
///   disk needs no ordering between a deletion and the data it would expose. B sees A's write either way.
/// - B read: the log where B has an entry, the volume elsewhere (fig. 17). A read: the volume.
/// - Afterwards the log is merged into the volume (`dissolve`), and the volume is image B again.
final class WriteLogImages: MirrorImages {
    let pool: Pool
    let volumeID: UInt64
    let size: UInt64
    let logID: UInt64
    let logName: String
    let journal: LogTableJournal
    /// B's lookup table: 4 KiB blocks held in the log. Changed under the exclusive range lock.
    private let entries = Mutex<Set<UInt64>>([])
    /// Set while merging: B's writes to blocks with entries go to the volume too, so that once every
    /// entry is copied the volume holds everything and the log can go.
    private let merging = Atomic<Bool>(false)
    /// Entries not yet in the journal (their log blocks are complete, maybe not yet durable).
    private let unjournaled = Mutex<[UInt64]>([])
    /// Serializes FLUSHes of the table: a FLUSH must not return before an earlier one's entries are
    /// in the journal.
    private let flushing = NSLock()
    var method: BackupMethod { .log }
    var imageAVolumeID: UInt64 { volumeID }
    /// Bytes per lookup-table entry: the engine's sub-block. A 4 KiB-aligned write covers its whole
    /// entry and needs no copy from A; only a smaller or unaligned one copies (at most 4 KiB). Divides
    /// the range lock's block, so an entry is always under one lock.
    static let blockSize: UInt64 = 4096

    init(pool: Pool, volumeID: UInt64, size: UInt64, logID: UInt64, logName: String, journal: LogTableJournal,
         entries: Set<UInt64> = []) {
        self.pool = pool
        self.volumeID = volumeID
        self.size = size
        self.logID = logID
        self.logName = logName
        self.journal = journal
        self.entries.withLock { $0 = entries }
    }

    var entryCount: Int { entries.withLock { $0.count } }

    private func hasEntry(_ block: UInt64) -> Bool { entries.withLock { $0.contains(block) } }

    /// Splits `[offset, offset + length)` at lock-block boundaries.
    private func pieces(offset: UInt64, length: UInt64) -> [(block: UInt64, offset: UInt64, length: UInt64)] {
        var result: [(block: UInt64, offset: UInt64, length: UInt64)] = []
        var position = offset
        let end = offset + length
        while position < end {
            let block = position / Self.blockSize
            let pieceEnd = min(end, (block + 1) * Self.blockSize)
            result.append((block: block, offset: position, length: pieceEnd - position))
            position = pieceEnd
        }
        return result
    }

    func read(_ side: MirrorSide, offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws -> [ReadExtent] {
        if side == .a { return try pool.read(volumeID: volumeID, offset: offset, into: buffer) }
        var extents: [ReadExtent] = []
        for piece in pieces(offset: offset, length: UInt64(buffer.count)) {
            let start = Int(piece.offset - offset)
            let target = UnsafeMutableRawBufferPointer(rebasing: buffer[start..<start + Int(piece.length)])
            let source = hasEntry(piece.block) ? logID : volumeID
            for extent in try pool.read(volumeID: source, offset: piece.offset, into: target) {
                if let last = extents.last, last.isHole == extent.isHole, last.offset + last.length == extent.offset {
                    extents[extents.count - 1].length += extent.length
                } else {
                    extents.append(extent)
                }
            }
        }
        return extents
    }

    func write(_ side: MirrorSide, offset: UInt64, source: WriteSource, fua: Bool) throws -> Bool {
        let owedByA = side == .a
            ? try pool.writeDeferringCommit(volumeID: volumeID, offset: offset, source: source, fua: fua) : false
        return try writeLog(side, offset: offset, source: source, fua: fua) || owedByA
    }

    var flushesOutsidePool: Bool { true }

    /// The log's part of a write: on A, the blocks B holds in the log get A's bytes too; on B, the
    /// write lands in the log (or, while merging, in the volume as well). Returns true when FUA still
    /// owes a pool commit. A FUA write that added entries makes them durable here, once for the whole
    /// request (the pool commit, then the journal), not once per 4 KiB entry.
    private func writeLog(_ side: MirrorSide, offset: UInt64, source: WriteSource, fua: Bool) throws -> Bool {
        var owed = false
        var recorded = false
        var reusedOnB = false
        for piece in pieces(offset: offset, length: source.byteCount) {
            let part = source.slice(from: Int(piece.offset - offset), length: Int(piece.length))
            let isMerging = merging.load(ordering: .acquiring)
            if hasEntry(piece.block) {
                reusedOnB = reusedOnB || side == .b
                owed = try pool.writeDeferringCommit(volumeID: logID, offset: piece.offset, source: part, fua: fua) || owed
                if side == .b && isMerging {
                    owed = try pool.writeDeferringCommit(volumeID: volumeID, offset: piece.offset, source: part, fua: fua)
                        || owed
                }
            } else if side == .b && isMerging {
                // A is archived: the volume is B's storage again wherever the log holds nothing.
                owed = try pool.writeDeferringCommit(volumeID: volumeID, offset: piece.offset, source: part, fua: fua) || owed
            } else if side == .b {
                if !covers(piece) { try copyIntoLog(piece.block) }
                try pool.write(volumeID: logID, offset: piece.offset, source: part, fua: false)
                // Recorded once the log block is complete: a FLUSH that journals the entry then
                // commits a block holding either A's old data or this write, never a hole.
                recordEntry(piece.block)
                recorded = true
            }
        }
        // A B write lives only in the log, so FUA needs its entries in the journal before the reply: the
        // ones it added, and any an earlier write added that no FLUSH has journaled yet. The pool commit
        // (which also pays what `owed` stands for), then the journal.
        guard fua && (recorded || (reusedOnB && hasUnjournaledEntries)) else { return owed }
        try flush()
        return false
    }

    func discard(_ side: MirrorSide, offset: UInt64, length: UInt64, mode: DiscardMode, fua: Bool) throws {
        if side == .a { try pool.discard(volumeID: volumeID, offset: offset, length: length, mode: mode, fua: fua) }
        for piece in pieces(offset: offset, length: length) {
            let isMerging = merging.load(ordering: .acquiring)
            if !hasEntry(piece.block) {
                guard side == .b else { continue }
                if isMerging {
                    try pool.discard(volumeID: volumeID, offset: piece.offset, length: piece.length, mode: mode, fua: fua)
                    continue
                }
                if !covers(piece) { try copyIntoLog(piece.block) }
                try pool.discard(volumeID: logID, offset: piece.offset, length: piece.length, mode: mode, fua: fua)
                recordEntry(piece.block)
                continue
            }
            try pool.discard(volumeID: logID, offset: piece.offset, length: piece.length, mode: mode, fua: fua)
            if side == .b && merging.load(ordering: .acquiring) {
                try pool.discard(volumeID: volumeID, offset: piece.offset, length: piece.length, mode: mode, fua: fua)
            }
        }
        // FUA on B: entries this discard added must be journaled before it completes.
        if fua && side == .b { try flush() }
    }

    func allocation(_ side: MirrorSide, offset: UInt64, length: UInt64, maximumExtents: Int) throws -> [AllocationExtent] {
        if side == .a {
            return try pool.snapshots.allocationExtents(
                volumeID: volumeID, offset: offset, length: length, maximumExtents: maximumExtents)
        }
        guard offset < size else { throw EngineError(.invalidArgument, "offset \(offset) is past the end of the volume") }
        let end = offset + min(length, size - offset)
        // B reads the log where it has an entry and the volume elsewhere: runs of entry blocks and of
        // the others, each answered by the volume it reads.
        let first = offset / Self.blockSize
        let last = (end - 1) / Self.blockSize
        let logged = entries.withLock { $0.filter { $0 >= first && $0 <= last } }.sorted()
        var runs: [(range: Range<UInt64>, volume: UInt64)] = []
        var position = offset
        var index = 0
        while position < end {
            if index < logged.count, logged[index] * Self.blockSize <= position {
                var block = logged[index]
                while index + 1 < logged.count && logged[index + 1] == block + 1 {
                    index += 1
                    block += 1
                }
                index += 1
                let runEnd = min(end, (block + 1) * Self.blockSize)
                runs.append((position..<runEnd, logID))
                position = runEnd
            } else {
                let runEnd = index < logged.count ? min(end, logged[index] * Self.blockSize) : end
                runs.append((position..<runEnd, volumeID))
                position = runEnd
            }
        }
        var extents: [AllocationExtent] = []
        for run in runs {
            let answer = try pool.snapshots.allocationExtents(
                volumeID: run.volume, offset: run.range.lowerBound, length: UInt64(run.range.count),
                maximumExtents: maximumExtents - extents.count + 1)
            for extent in answer {
                if let previous = extents.last, previous.isHole == extent.isHole {
                    extents[extents.count - 1].length += extent.length
                } else {
                    extents.append(extent)
                }
            }
            // The engine stopped early (too many extents): describe no further than it did.
            if answer.reduce(0, { $0 + $1.length }) < UInt64(run.range.count) || extents.count > maximumExtents { break }
        }
        return Array(extents.prefix(maximumExtents))
    }

    func copyAndWrite(_ side: MirrorSide, _ command: CopyAndWrite, fua: Bool) throws {
        if side == .a {
            // A is the volume: the engine copies there; blocks B holds in its log get the result too.
            try command.run(on: volumeID, pool: pool, fua: fua)
            let chunk = try command.readTarget(of: volumeID, pool: pool)
            if try chunk.withUnsafeBytes({ try writeLog(.a, offset: command.target, source: .bytes($0), fua: fua) }) {
                try pool.flush()
            }
            return
        }
        // B's source may lie partly in the log and partly in the volume, and its target goes to the
        // log: the chunk is built here (as B reads it, with the buffer on top) and written as B writes.
        try command.check(chunkSize: try pool.volumes.info(named: logName).chunkSize, volumeSize: size)
        var chunk = [UInt8](repeating: 0, count: Int(command.copySize))
        _ = try chunk.withUnsafeMutableBytes { try read(.b, offset: command.source, into: $0) }
        chunk.withUnsafeMutableBytes { raw in
            raw.baseAddress!.advanced(by: Int(command.bufferOffset))
                .copyMemory(from: command.buffer.baseAddress!, byteCount: command.buffer.count)
        }
        if try chunk.withUnsafeBytes({ try write(.b, offset: command.target, source: .bytes($0), fua: fua) }) {
            try pool.flush()
        }
    }

    private var hasUnjournaledEntries: Bool { unjournaled.withLock { !$0.isEmpty } }

    /// True when the piece covers its whole entry (nothing of A's block survives in B's).
    private func covers(_ piece: (block: UInt64, offset: UInt64, length: UInt64)) -> Bool {
        piece.offset == piece.block * Self.blockSize && piece.length == min(Self.blockSize, size - piece.offset)
    }

    /// Copies entry block `block` of the volume (A) into the log, before a request that does not
    /// cover it all is applied there.
    private func copyIntoLog(_ block: UInt64) throws {
        try copy(block: block, from: volumeID, to: logID, durable: false)
    }

    /// B now holds `block` in its log (journaled at the next FLUSH). Call with the block's range lock
    /// held exclusive, once the log block is complete.
    private func recordEntry(_ block: UInt64) {
        entries.withLock { _ = $0.insert(block) }
        unjournaled.withLock { $0.append(block) }
    }

    /// The pool commit first (the log blocks of the new entries become durable), then the entries.
    func flush() throws {
        flushing.lock()
        defer { flushing.unlock() }
        let batch = unjournaled.withLock { pending -> [UInt64] in
            defer { pending.removeAll() }
            return pending
        }
        do {
            try pool.flush()
        } catch {
            unjournaled.withLock { $0.insert(contentsOf: batch, at: 0) }
            throw error
        }
        guard !batch.isEmpty else { return }
        do {
            try journal.append(batch)
        } catch {
            // Appending again after a failed fsync could "succeed" over lost entries: stop the pool.
            throw pool.failStop(file: journal.path, call: "log table append + fsync", error: error)
        }
    }

    private func copy(block: UInt64, from source: UInt64, to target: UInt64, durable: Bool) throws {
        let start = block * Self.blockSize
        let length = min(Self.blockSize, size - start)
        var buffer = [UInt8](repeating: 0, count: Int(length))
        try buffer.withUnsafeMutableBytes { raw in
            let extents = try pool.read(volumeID: source, offset: start, into: raw)
            for extent in extents {
                if extent.isHole {
                    try pool.discard(volumeID: target, offset: extent.offset, length: extent.length, mode: .zero)
                } else {
                    let from = Int(extent.offset - start)
                    try pool.write(
                        volumeID: target, offset: extent.offset,
                        source: .bytes(UnsafeRawBufferPointer(rebasing: raw[from..<from + Int(extent.length)])),
                        fua: false)
                }
            }
        }
        if durable { try pool.flush() }
    }

    /// Merges the log into the volume: each entry's block is copied under its exclusive range lock
    /// while B's writes to merged blocks go to both, then everything is made durable. The entries stay
    /// until the images are dropped, so a crash in the middle merges again from a log that is current.
    func prepareDissolve() { merging.store(true, ordering: .releasing) }

    func forgetTable() throws {
        do {
            try AtomicFile.remove(journal.path)
        } catch {
            // The merged log's table would be merged again after a restart: harmless but never silent.
            throw pool.failStop(file: journal.path, call: "unlink + directory fsync", error: error)
        }
    }

    func dissolve(locks: RangeLockTable) throws {
        merging.store(true, ordering: .releasing)
        for block in entries.withLock({ $0.sorted() }) {
            try locks.withRange(offset: block * Self.blockSize, length: 1, exclusive: true) {
                try copy(block: block, from: logID, to: volumeID, durable: false)
            }
        }
        try pool.flush()
    }

    func discardImages() throws {
        try pool.volumes.delete(name: logName, force: true)
        unlink(journal.path)
    }

    /// After a crash: the blocks of the journal at `journalPath` are copied from the log into the
    /// volume (no session runs yet), made durable, and the log and journal go.
    static func recover(pool: Pool, volumeID: UInt64, size: UInt64, logName: String, journalPath: String) throws {
        guard let logID = try? pool.volumes.id(named: logName) else {
            unlink(journalPath)
            return
        }
        let journal = try LogTableJournal(path: journalPath)
        let images = WriteLogImages(
            pool: pool, volumeID: volumeID, size: size, logID: logID, logName: logName, journal: journal,
            entries: journal.entries)
        try images.dissolve(locks: RangeLockTable())
        try images.forgetTable()
        try images.discardImages()
    }
}
