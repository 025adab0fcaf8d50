@testable import CairnBackup
import CairnEngine
import CairnIO
import CairnTestSupport
import Foundation
import Logging
import Testing

/// The log method's journal on simulated storage: a failed append stops the pool (never re-appended
/// over a sync that reported its error once), and a torn last append is cut off on reopening.
@Suite struct JournalFailStopTests {
    private func images(fileSystem: SimulatedFileSystem) throws -> (Pool, WriteLogImages) {
        var options = PoolOptions()
        options.commitIntervalNanoseconds = 3_600_000_000_000
        options.logger.logLevel = .critical
        let pool = try Pool(media: SimulatedMedia(), options: options)
        let volume = try pool.volumes.create(name: "v", size: 1 << 20, chunkSize: 65536)
        let log = try pool.volumes.create(name: "v-log", size: 1 << 20, chunkSize: 65536)
        try fileSystem.makeDirectory("/pool")
        let journal = try LogTableJournal(path: "/pool/b.log-table", fileSystem: fileSystem)
        let images = WriteLogImages(
            pool: pool, volumeID: volume.id, size: 1 << 20, logID: log.id, logName: "v-log", journal: journal)
        return (pool, images)
    }

    private func writeB(_ images: WriteLogImages, block: UInt64) throws {
        let bytes = [UInt8](repeating: UInt8(block + 1), count: 4096)
        _ = try bytes.withUnsafeBytes { try images.write(.b, offset: block * 4096, source: .bytes($0), fua: false) }
    }

    @Test func failedJournalAppendStopsThePool() throws {
        let fileSystem = SimulatedFileSystem()
        let (pool, images) = try images(fileSystem: fileSystem)
        defer { pool.close() }
        try writeB(images, block: 1)
        try images.flush()
        try writeB(images, block: 2)
        try #require(fileSystem.file(at: "/pool/b.log-table")).failNextSyncs()
        let error = #expect(throws: EngineError.self) { try images.flush() }
        #expect(error?.code == .ioFailure)
        #expect(pool.hasFailed)
        #expect(pool.status().failure?.contains("/pool/b.log-table") == true)
        // The journal is not appended again: the next FLUSH fails too, although the file would sync now.
        #expect(throws: EngineError.self) { try images.flush() }
        #expect(try LogTableJournal.load(path: "/pool/b.log-table", fileSystem: fileSystem) == [1, 2])
        var random = SystemRandomNumberGenerator()
        let disk = fileSystem.crashImage(using: &random)
        #expect(try LogTableJournal.load(path: "/pool/b.log-table", fileSystem: disk) == [1])
    }

    @Test func reopenedJournalHasEveryFlushedEntry() throws {
        let fileSystem = SimulatedFileSystem()
        let (pool, images) = try images(fileSystem: fileSystem)
        defer { pool.close() }
        for block in 0..<5 as Range<UInt64> {
            try writeB(images, block: block * 3)
            try images.flush()
        }
        var random = SystemRandomNumberGenerator()
        let disk = fileSystem.crashImage(using: &random)
        let reopened = try LogTableJournal(path: "/pool/b.log-table", fileSystem: disk)
        #expect(reopened.entries == [0, 3, 6, 9, 12])
    }
}
