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
        let volume = try pool.volumes.create(name: "v", size: 1 << 20).id
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
        #expect(try readBytes(reopened, try reopened.volumes.id(named: "v"), 0, 65536) == pattern(1, 65536))
        #expect(try reopened.checker.check().isHealthy)
    }

    @Test func failedMetadataCommitIsReportedAndNothingFlushedIsLost() throws {
        let media = SimulatedMedia()
        let pool = try Pool(media: media, options: testOptions())
        let volume = try pool.volumes.create(name: "v", size: 1 << 20).id
        try writeBytes(pool, volume, 0, pattern(1, 8192))
        try pool.flush()
        media.store.setFailCommits(true)
        try writeBytes(pool, volume, 131072, pattern(2, 8192))
        #expect(throws: EngineError.self) { try pool.flush() }
        #expect(throws: EngineError.self) { try pool.volumes.create(name: "w", size: 1 << 20) }
        var random = SeededGenerator(seed: 8)
        let image = media.crashImage(using: &random)
        pool.simulateProcessDeath()
        image.store.setFailCommits(false)
        let reopened = try Pool(media: image, options: testOptions())
        defer { reopened.close() }
        let id = try reopened.volumes.id(named: "v")
        #expect(try readBytes(reopened, id, 0, 8192) == pattern(1, 8192))
        #expect(reopened.volumes.list().map(\.name) == ["v"])
        #expect(try reopened.checker.check().isHealthy)
    }

    /// A pool with one volume whose first chunk was written and flushed: a FUA write over it is an
    /// in-place RWF_DSYNC write (or zero + sync) that needs no commit.
    private func flushedPool() throws -> (SimulatedMedia, Pool, UInt64, SimulatedStorageFile) {
        let media = SimulatedMedia()
        let pool = try Pool(media: media, options: testOptions())
        let volume = try pool.volumes.create(name: "v", size: 1 << 20).id
        try writeBytes(pool, volume, 0, pattern(1, 65536))
        try pool.flush()
        return (media, pool, volume, media.slotFile(named: "slots-65536.dat")!)
    }

    /// Checks the state after a fail-stop: writes, FLUSH and management changes refused with
    /// `ioFailure`, reads served, the status says why, and a restart from what the disk kept has every
    /// byte acknowledged before the failure.
    private func expectStopped(_ media: SimulatedMedia, _ pool: Pool, _ volume: UInt64, seed: UInt64) throws {
        #expect(pool.hasFailed)
        #expect(pool.status().failure?.contains("slots-65536.dat") == true)
        #expect(throws: EngineError.self) { try writeBytes(pool, volume, 131072, pattern(4, 4096)) }
        #expect(throws: EngineError.self) { try pool.flush() }
        #expect(throws: EngineError.self) { try pool.volumes.create(name: "w", size: 1 << 20) }
        _ = try readBytes(pool, volume, 0, 65536)
        var random = SeededGenerator(seed: seed)
        let image = media.crashImage(using: &random)
        pool.simulateProcessDeath()
        let reopened = try Pool(media: image, options: testOptions())
        defer { reopened.close() }
        #expect(try reopened.checker.check().isHealthy)
        #expect(!reopened.hasFailed)
    }

    @Test func failedDurableWriteStopsThePool() throws {
        let (media, pool, volume, file) = try flushedPool()
        file.failNextDurableWrites()
        let error = #expect(throws: EngineError.self) { try writeBytes(pool, volume, 0, pattern(2, 4096), fua: true) }
        #expect(error?.code == .ioFailure)
        // A later FLUSH must not succeed over the lost write (the next sync would).
        try expectStopped(media, pool, volume, seed: 11)
    }

    @Test func failedZeroAndSyncStopsThePool() throws {
        let (media, pool, volume, file) = try flushedPool()
        file.failNextSyncs()
        #expect(throws: EngineError.self) {
            try pool.write(volumeID: volume, offset: 0, source: .zeros(length: 4096), fua: true)
        }
        try expectStopped(media, pool, volume, seed: 12)
    }

    /// Linux reports a failed writeback to one sync only; the retry that would then succeed must never
    /// be issued: the pool stays stopped although the disk "works" again.
    @Test func failedFlushIsNotRetriedAfterReportOnce() throws {
        let (media, pool, volume, file) = try flushedPool()
        try writeBytes(pool, volume, 65536, pattern(3, 4096))
        file.failNextSyncs()
        #expect(throws: EngineError.self) { try pool.flush() }
        #expect(file.hasLostWrites)
        #expect(throws: EngineError.self) { try pool.flush() }
        try expectStopped(media, pool, volume, seed: 13)
    }

    @Test func failStopKeepsTheFirstFailureAndNamesTheFileAndCall() throws {
        let (_, pool, _, _) = try flushedPool()
        defer { pool.close() }
        let first = pool.failStop(file: "/pool/backups/b.log-table", call: "fsync", error: EngineError(.ioFailure, "EIO"))
        let second = pool.failStop(file: "/other", call: "fdatasync", error: EngineError(.ioFailure, "EIO"))
        #expect(first.message.contains("/pool/backups/b.log-table") && first.message.contains("fsync"))
        #expect(second.message == first.message)
        #expect(pool.status().failure == first.message)
    }
}
