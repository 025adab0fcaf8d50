import CairnArchive
import CairnEngine
import Foundation

/// The archiver's read-ahead: image A is cut into pieces that several reader threads read and seal
/// (zero runs found, each DATA record's SHA-256 computed) ahead of the one thread that writes them, in
/// order, into the archive. Reading and per-record hashing, which dominated a single-threaded archiver,
/// overlap with the writer's own work (the trailer's digest chain over record headers, and write(2)).
///
/// Pieces are handed out in volume order and written in volume order; a reader may run at most
/// `window` pieces ahead of the writer, which bounds memory to `window × pieceSize`.
final class ArchivePipeline: @unchecked Sendable {
    // @unchecked: `pieces` and the slot buffers are fixed after init; everything that changes is
    // guarded by `condition`, and a slot's contents belong to the reader that claimed it until it is
    // marked ready, then to the writer until it is released.

    /// Largest piece: the archive's largest DATA record, so a piece of data is one record.
    static let pieceSize = Int(ArchiveFormat.maximumDataLength)
    /// Pieces in flight ahead of the writer: enough for every reader to have one being read and one
    /// ready (32 MiB of buffers at 4 MiB pieces).
    static let window = 8
    /// Reader threads: two keep the writer fed on two cores (bench/backup_split.py --archive-only); more
    /// cores help hashing up to the window's depth.
    static var readerCount: Int { min(4, max(2, ProcessInfo.processInfo.activeProcessorCount)) }

    /// One piece of image A to archive.
    struct Piece {
        var offset: UInt64
        var length: Int
    }

    /// What a piece turned into, in order.
    enum Record {
        /// `length` bytes at `start` of the slot's buffer, sealed.
        case data(ArchiveDataSeal, start: Int)
        case zero(offset: UInt64, length: UInt64)
    }

    private final class Slot {
        let buffer: UnsafeMutableRawBufferPointer
        var records: [Record] = []
        var error: (any Error)?
        var ready = false

        init() {
            buffer = .allocate(byteCount: ArchivePipeline.pieceSize, alignment: 4096)
        }

        deinit { buffer.deallocate() }
    }

    private let pieces: [Piece]
    private let slots: [Slot]
    private let condition = NSCondition()
    /// Next piece a reader takes, and next piece the writer writes (guarded by `condition`).
    private var nextToRead = 0
    private var nextToWrite = 0
    private var stopped = false
    private let readersDone = DispatchGroup()
    private let read: @Sendable (Piece, UnsafeMutableRawBufferPointer) throws -> [Record]

    /// `read` fills the buffer with the piece and returns its records (on a reader thread).
    init(pieces: [Piece], read: @escaping @Sendable (Piece, UnsafeMutableRawBufferPointer) throws -> [Record]) {
        self.pieces = pieces
        self.read = read
        slots = (0..<min(Self.window, max(1, pieces.count))).map { _ in Slot() }
    }

    /// Cuts sorted ranges into pieces that never cross a `pieceSize` boundary of the volume (so each
    /// read covers whole engine chunks where the range does).
    static func pieces(of ranges: [Range<UInt64>]) -> [Piece] {
        var pieces: [Piece] = []
        let size = UInt64(pieceSize)
        for range in ranges {
            var position = range.lowerBound
            while position < range.upperBound {
                let end = min(range.upperBound, (position / size + 1) * size)
                pieces.append(Piece(offset: position, length: Int(end - position)))
                position = end
            }
        }
        return pieces
    }

    /// Runs the readers and calls `write` for each piece in order, on the calling thread, with the
    /// piece's buffer and records. Returns when every piece is written or throws the first error (a
    /// reader's or the writer's); either way every reader thread has ended before it returns.
    func run(write: (Piece, UnsafeRawBufferPointer, [Record]) throws -> Void) throws {
        for index in 0..<min(Self.readerCount, pieces.count) {
            readersDone.enter()
            let thread = Thread { [self] in
                readLoop()
                readersDone.leave()
            }
            thread.name = "cairn-archive-read-\(index)"
            thread.start()
        }
        defer {
            condition.lock()
            stopped = true
            condition.broadcast()
            condition.unlock()
            readersDone.wait()
        }
        for (index, piece) in pieces.enumerated() {
            let slot = slots[index % slots.count]
            condition.lock()
            while !slot.ready { condition.wait() }
            condition.unlock()
            if let error = slot.error { throw error }
            try write(piece, UnsafeRawBufferPointer(slot.buffer), slot.records)
            condition.lock()
            slot.ready = false
            slot.records = []
            nextToWrite = index + 1
            condition.broadcast()
            condition.unlock()
        }
    }

    private func readLoop() {
        while true {
            condition.lock()
            while !stopped && nextToRead < pieces.count && nextToRead - nextToWrite >= slots.count { condition.wait() }
            guard !stopped, nextToRead < pieces.count else {
                condition.unlock()
                return
            }
            let index = nextToRead
            nextToRead += 1
            condition.unlock()
            let slot = slots[index % slots.count]
            let piece = pieces[index]
            do {
                slot.records = try read(piece, UnsafeMutableRawBufferPointer(rebasing: slot.buffer[0..<piece.length]))
                slot.error = nil
            } catch {
                slot.records = []
                slot.error = error
            }
            condition.lock()
            slot.ready = true
            condition.broadcast()
            condition.unlock()
        }
    }
}
