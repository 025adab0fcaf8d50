import CairnArchive
@testable import CairnBackup
import CairnEngine
import CairnTestSupport
import Foundation
import Synchronization
import Testing

/// The archiver's read-ahead: pieces read out of order on several threads reach the writer in volume
/// order, a reader's error stops the archive, and an archive written through it restores exactly.
@Suite struct ArchivePipelineTests {
    @Test func piecesNeverCrossAPieceBoundary() {
        let size = UInt64(ArchivePipeline.pieceSize)
        let pieces = ArchivePipeline.pieces(of: [512..<size + 4096, 3 * size..<3 * size + 512])
        #expect(pieces.map(\.offset) == [512, size, 3 * size])
        #expect(pieces.map(\.length) == [Int(size) - 512, 4096, 512])
    }

    /// Readers finish in a seeded random order (each sleeps a random time); the writer still sees
    /// every piece once, in order, with its own bytes.
    @Test(arguments: [UInt64(11), 12, 13])
    func piecesAreWrittenInOrder(seed: UInt64) throws {
        let ranges = (0..<40).map { UInt64($0) * UInt64(ArchivePipeline.pieceSize) + 4096 }.map { $0..<$0 + 8192 }
        let delays = Mutex(SeededGenerator(seed: seed))
        let pipeline = ArchivePipeline(pieces: ArchivePipeline.pieces(of: ranges)) { piece, buffer in
            usleep(delays.withLock { UInt32.random(in: 0...3000, using: &$0) })
            buffer.storeBytes(of: piece.offset, toByteOffset: 0, as: UInt64.self)
            return [.zero(offset: piece.offset, length: UInt64(piece.length))]
        }
        var seen: [UInt64] = []
        try pipeline.run { piece, buffer, records in
            #expect(buffer.load(fromByteOffset: 0, as: UInt64.self) == piece.offset, "seed \(seed)")
            #expect(records.count == 1, "seed \(seed)")
            seen.append(piece.offset)
        }
        #expect(seen == ranges.map(\.lowerBound), "seed \(seed)")
    }

    @Test func aReaderErrorStopsTheArchive() {
        let ranges = (0..<30).map { UInt64($0) * UInt64(ArchivePipeline.pieceSize) }.map { $0..<$0 + 4096 }
        let failing = UInt64(7) * UInt64(ArchivePipeline.pieceSize)
        let pipeline = ArchivePipeline(pieces: ArchivePipeline.pieces(of: ranges)) { piece, _ in
            if piece.offset == failing { throw EngineError(.ioFailure, "injected read failure") }
            return []
        }
        var written: [UInt64] = []
        #expect(throws: EngineError.self) {
            try pipeline.run { piece, _, _ in written.append(piece.offset) }
        }
        #expect(written == ranges.prefix(7).map(\.lowerBound))
    }

    /// A seeded volume of random data, zero runs inside data, holes, and writes across piece boundaries:
    /// the full archive (several readers) checks out and holds the same bytes; zeros written as data
    /// cost nothing in it.
    @Test(arguments: [UInt64(1), 2])
    func anArchiveThroughThePipelineRestoresExactly(seed: UInt64) throws {
        let directory = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var options = PoolOptions()
        options.logger = testLogger()
        let pool = try Pool.open(directory: directory + "/pool", options: options)
        defer { pool.close() }
        let size: UInt64 = 24 << 20
        let volume = try pool.volumes.create(name: "v", size: size)
        var random = SeededGenerator(seed: seed)
        for _ in 0..<60 {
            let length = Int.random(in: 1...256, using: &random) * 4096
            let offset = UInt64.random(in: 0...(size - UInt64(length)) / 4096, using: &random) * 4096
            var bytes = [UInt8](repeating: 0, count: length)
            if Bool.random(using: &random) {
                for index in bytes.indices { bytes[index] = UInt8.random(in: 0...255, using: &random) }
            }
            try writeBytes(pool, volume.id, offset, bytes)
        }
        // Zeros written as data, starting a piece: they must not be carried as data.
        let zeros = UInt64(5 * ArchivePipeline.pieceSize)..<UInt64(5 * ArchivePipeline.pieceSize + (1 << 20))
        try writeBytes(pool, volume.id, zeros.lowerBound, [UInt8](repeating: 0, count: 1 << 20))
        let archiver = BackupArchiver(pool: pool, volumeID: volume.id, size: size)
        let output = MemoryArchive()
        let writer = try ArchiveWriter(
            output: output,
            header: ArchiveHeader(
                archiveID: "p\(seed)", kind: .full, baseArchiveID: nil, chainIndex: 0, volume: "v", volumeSize: size,
                chunkSize: volume.chunkSize, method: "cow", splitAt: "2026-01-01T00:00:00Z", drain: "drained",
                sessionsAtSplit: 0))
        var progress: UInt64 = 0
        try archiver.write(
            ranges: try archiver.allocatedRanges(), incremental: false, to: writer, progress: { progress = $0 },
            shouldContinue: { true })
        try writer.finish()
        #expect(progress > 0, "seed \(seed)")
        let restored = MemoryArchive(bytes: output.bytes)
        let reader = try ArchiveReader(input: restored)
        var image = [UInt8](repeating: 0, count: Int(size))
        while let record = try reader.next() {
            guard case .data(let offset, let bytes, _) = record else { continue }
            #expect(!zeros.overlaps(offset..<offset + UInt64(bytes.count)), "seed \(seed)")
            image.replaceSubrange(Int(offset)..<Int(offset) + bytes.count, with: bytes)
        }
        #expect(try readBytes(pool, volume.id, 0, Int(size)) == image, "seed \(seed)")
    }
}
