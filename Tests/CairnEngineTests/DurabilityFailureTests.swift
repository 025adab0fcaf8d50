@_spi(Testing) import CairnEngine
import CairnTestSupport
import InteropSupport
import Testing

@Suite struct DurabilityFailureTests {
    /// After fdatasync fails the page cache may have dropped data the disk never got (PostgreSQL's
    /// "fsyncgate"): the pool must stop acknowledging writes rather than pretend, and a restart must
    /// bring back everything flushed before the failure.
    @Test func failedSyncTurnsThePoolReadOnlyAndRestartRecovers() throws {
        let media = SimulatedMedia()
        let pool = try Pool(media: media, options: testOptions())
        let volume = try pool.createVolume(name: "v", size: 1 << 20).id
        try writeBytes(pool, volume, 0, pattern(1, 65536))
        try pool.flush()
        try writeBytes(pool, volume, 65536, pattern(2, 4096))
        media.slotFile(named: "slots-65536.dat")!.failSyncs()
        #expect(throws: EngineError.self) { try pool.flush() }
        #expect(throws: EngineError.self) { try writeBytes(pool, volume, 0, pattern(3, 512)) }
        #expect(pool.status().failure != nil)
        // Reads still work from what the pool has.
        #expect(try readBytes(pool, volume, 0, 65536) == pattern(1, 65536))
        var random = SeededGenerator(seed: 7)
        let image = media.crashImage(using: &random)
        pool.simulateProcessDeath()
        let reopened = try Pool(media: image, options: testOptions())
        defer { reopened.close() }
        #expect(try readBytes(reopened, try reopened.volumeID(named: "v"), 0, 65536) == pattern(1, 65536))
        #expect(try reopened.check().isHealthy)
    }

    @Test func failedMetadataCommitIsReportedAndNothingFlushedIsLost() throws {
        let media = SimulatedMedia()
        let pool = try Pool(media: media, options: testOptions())
        let volume = try pool.createVolume(name: "v", size: 1 << 20).id
        try writeBytes(pool, volume, 0, pattern(1, 8192))
        try pool.flush()
        media.store.setFailCommits(true)
        try writeBytes(pool, volume, 131072, pattern(2, 8192))
        #expect(throws: EngineError.self) { try pool.flush() }
        #expect(throws: EngineError.self) { try pool.createVolume(name: "w", size: 1 << 20) }
        var random = SeededGenerator(seed: 8)
        let image = media.crashImage(using: &random)
        pool.simulateProcessDeath()
        image.store.setFailCommits(false)
        let reopened = try Pool(media: image, options: testOptions())
        defer { reopened.close() }
        let id = try reopened.volumeID(named: "v")
        #expect(try readBytes(reopened, id, 0, 8192) == pattern(1, 8192))
        #expect(reopened.listVolumes().map(\.name) == ["v"])
        #expect(try reopened.check().isHealthy)
    }
}
