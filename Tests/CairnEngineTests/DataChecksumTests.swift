@_spi(Testing) import CairnEngine
import CairnIO
import CairnTestSupport
import Foundation
import Glibc
import Testing

/// End-to-end data checksums: damage in a slot file is an error on read (never wrong data), found by a
/// scrub with its volume, offset and snapshot, and survives reopening; sharing and copies keep verifying.
@Suite struct DataChecksumTests {
    let media = SimulatedMedia()
    let pool: Pool

    init() throws {
        pool = try Pool(media: media, options: testOptions())
    }

    var slotFile: SimulatedStorageFile { media.slotFile(named: "slots-65536.dat")! }

    /// Opens the pool in `directory`, runs `body` and closes it; the pool (and its directory lock) is gone
    /// when this returns, so the next call can open it again.
    static func withPool<T>(_ directory: String, _ options: PoolOptions = testOptions(), _ body: (Pool) throws -> T)
        throws -> T
    {
        let pool = try Pool.open(directory: directory, options: options)
        defer { pool.close() }
        return try body(pool)
    }

    /// Test options whose commits sync the checksum files at most once per `intervalNanoseconds`.
    static func checksumsSyncedAt(intervalNanoseconds: UInt64) -> PoolOptions {
        var options = testOptions()
        options.checksumSyncIntervalNanoseconds = intervalNanoseconds
        return options
    }

    /// Flips one byte of slot data behind the engine's back (what a disk's silent corruption does).
    static func flipByte(in file: any StorageFile, at offset: UInt64) throws {
        var byte: [UInt8] = [0]
        try byte.withUnsafeMutableBytes { try file.read(into: $0, at: offset) }
        byte[0] ^= 0x40
        try byte.withUnsafeBytes { try file.write($0, at: offset) }
    }

    /// Where byte `offset` of the newest version of `volume` lives in its slot file (64 KiB chunks).
    func slotFileOffset(_ volume: String, _ offset: UInt64, version: Int? = nil) -> UInt64 {
        let versions = pool.versions(volume: volume, chunk: offset / 65536)
        let chosen = versions[version ?? versions.count - 1]
        return chosen.slot.index * 65536 + offset % 65536
    }

    func expectMismatch(_ volume: UInt64, _ offset: UInt64, _ length: Int, snapshotEpoch: UInt32? = nil) {
        var bytes = [UInt8](repeating: 0, count: length)
        do {
            _ = try bytes.withUnsafeMutableBytes {
                try pool.read(volumeID: volume, snapshotEpoch: snapshotEpoch, offset: offset, into: $0)
            }
            Issue.record("reading \(length) bytes at \(offset) succeeded over damaged data")
        } catch let error as EngineError {
            #expect(error.code == .checksumMismatch, "\(error)")
        } catch {
            Issue.record("unexpected error \(error)")
        }
    }

    @Test func aFlippedByteFailsItsBlockOnly() throws {
        let v = try pool.volumes.create(name: "v", size: 1 << 20).id
        try writeBytes(pool, v, 0, pattern(1, 256 << 10))
        try pool.flush()
        let damaged: UInt64 = 65536 + 3 * 4096
        try Self.flipByte(in: slotFile, at: slotFileOffset("v", damaged) + 100)
        expectMismatch(v, damaged, 4096)
        expectMismatch(v, damaged + 512, 512)
        expectMismatch(v, 0, 256 << 10)
        // The neighbouring blocks, and the rest of the chunk, read exactly.
        #expect(try readBytes(pool, v, damaged - 4096, 4096) == Array(pattern(1, 256 << 10)[Int(damaged - 4096)..<Int(damaged)]))
        #expect(try readBytes(pool, v, damaged + 4096, 8192) == Array(pattern(1, 256 << 10)[Int(damaged + 4096)..<Int(damaged + 12288)]))
        #expect(try readBytes(pool, v, 0, 65536) == Array(pattern(1, 65536)))
        #expect(pool.status().checksumMismatches >= 3)
        #expect(pool.status().dataChecksums)
        // A partial write into the damaged block does not launder it into a good checksum.
        #expect(throws: EngineError.self) { try writeBytes(pool, v, damaged + 1024, pattern(2, 512)) }
        expectMismatch(v, damaged, 4096)
        // A whole-block overwrite replaces the damage.
        try writeBytes(pool, v, damaged, pattern(3, 4096))
        #expect(try readBytes(pool, v, damaged, 4096) == pattern(3, 4096))
        pool.close()
    }

    @Test func partialWritesKeepTheirBlocksVerified() throws {
        let v = try pool.volumes.create(name: "v", size: 1 << 20).id
        var model = pattern(4, 128 << 10)
        try writeBytes(pool, v, 0, model)
        for (offset, length) in [(100, 512), (4000, 300), (65536 - 200, 400), (70000, 9000)] {
            let data = pattern(UInt8(offset % 251), length)
            try writeBytes(pool, v, UInt64(offset), data)
            model.replaceSubrange(offset..<(offset + length), with: data)
        }
        #expect(try readBytes(pool, v, 0, 128 << 10) == model)
        try pool.flush()
        #expect(try pool.scrub.runNow().damage.isEmpty)
        pool.close()
    }

    @Test func scrubReportsVolumeOffsetAndSnapshot() throws {
        let v = try pool.volumes.create(name: "v", size: 1 << 20).id
        try writeBytes(pool, v, 0, pattern(5, 256 << 10))
        try pool.snapshots.create(volume: "v", name: "s1")
        // Chunk 2 is overwritten after the snapshot: its first version is only the snapshot's.
        try writeBytes(pool, v, 2 * 65536, pattern(6, 65536))
        try pool.flush()
        #expect(try pool.scrub.runNow().damage.isEmpty)
        let liveDamage: UInt64 = 65536 + 8192
        let snapshotDamage: UInt64 = 2 * 65536 + 4096
        try Self.flipByte(in: slotFile, at: slotFileOffset("v", liveDamage) + 7)
        try Self.flipByte(in: slotFile, at: slotFileOffset("v", snapshotDamage, version: 0) + 4000)
        let report = try pool.scrub.runNow()
        #expect(report.finished)
        #expect(report.verifiedBytes >= 5 * 65536)
        let found = Set(report.damage.map { "\($0.volume)@\($0.offset) live=\($0.live) \($0.snapshots)" })
        #expect(found == ["v@\(liveDamage) live=true [\"s1\"]", "v@\(snapshotDamage) live=false [\"s1\"]"])
        // The live volume reads chunk 2 fine; the snapshot does not.
        #expect(try readBytes(pool, v, snapshotDamage, 4096) == Array(pattern(6, 65536)[4096..<8192]))
        let epoch = try pool.snapshots.info(volume: "v", name: "s1").epoch
        expectMismatch(v, snapshotDamage, 4096, snapshotEpoch: epoch)
        #expect(report.summary.contains("2 damaged blocks"))
        pool.close()
    }

    @Test("a scrub reads ahead in batches and still verifies every chunk, the first and last of each batch too")
    func scrubCoversEveryBatch() throws {
        let chunks = 3 * Scrubber.readAheadChunks + 5
        let v = try pool.volumes.create(name: "v", size: UInt64(chunks) * 65536).id
        try writeBytes(pool, v, 0, pattern(8, chunks * 65536))
        try pool.flush()
        let damaged: [UInt64] = [0, 31, 32, 63, 64, UInt64(chunks - 1)].map { $0 * 65536 + 4096 }
        for offset in damaged { try Self.flipByte(in: slotFile, at: slotFileOffset("v", offset) + 9) }
        let report = try pool.scrub.runNow()
        #expect(report.verifiedBytes == UInt64(chunks) * 65536)
        #expect(Set(report.damage.map(\.offset)) == Set(damaged))
        pool.close()
    }

    @Test func sharedAndClonedSlotsVerify() throws {
        let a = try pool.volumes.create(name: "a", size: 1 << 20).id
        let b = try pool.volumes.create(name: "b", size: 1 << 20).id
        try writeBytes(pool, a, 0, pattern(7, 256 << 10))
        try writeBytes(pool, b, 0, pattern(7, 256 << 10))
        try pool.flush()
        let job = try pool.dedup.start()
        let deadline = ContinuousClock.now + .seconds(60)
        while pool.jobs.job(job)?.state == .running && ContinuousClock.now < deadline { usleep(1000) }
        #expect(pool.jobs.job(job)?.state == .succeeded)
        #expect(pool.status().sharedBytes > 0)
        #expect(try readBytes(pool, a, 0, 256 << 10) == pattern(7, 256 << 10))
        #expect(try readBytes(pool, b, 0, 256 << 10) == pattern(7, 256 << 10))
        // A clone of a snapshot, with a partial write that copies the edges of its sub-block.
        try pool.snapshots.create(volume: "a", name: "s")
        try pool.volumes.clone(volume: "a", snapshot: "s", as: "c")
        let c = try pool.volumes.id(named: "c")
        try writeBytes(pool, c, 4096 + 100, pattern(8, 200))
        var expected = pattern(7, 256 << 10)
        expected.replaceSubrange(4196..<4396, with: pattern(8, 200))
        #expect(try readBytes(pool, c, 0, 256 << 10) == expected)
        #expect(try pool.scrub.runNow().damage.isEmpty)
        // Damage in a shared slot fails every volume that reads it.
        let shared = pool.versions(volume: "a", chunk: 1)[0].slot
        #expect(pool.versions(volume: "b", chunk: 1)[0].slot == shared)
        try Self.flipByte(in: slotFile, at: shared.index * 65536 + 20000)
        expectMismatch(a, 65536 + 16384, 4096)
        expectMismatch(b, 65536 + 16384, 4096)
        let volumes = Set(try pool.scrub.runNow().damage.map(\.volume))
        #expect(volumes == ["a", "b"])
        pool.close()
    }

    @Test func aChecksumFileErrorStopsThePool() throws {
        // Every commit syncs the checksums here, so the FLUSH below reaches the failing sync.
        let media = SimulatedMedia()
        let pool = try Pool(media: media, options: Self.checksumsSyncedAt(intervalNanoseconds: 0))
        self.pool.close()
        let v = try pool.volumes.create(name: "v", size: 1 << 20).id
        // The first write marks its region (a write and sync of the checksum file).
        try writeBytes(pool, v, 0, pattern(12, 65536))
        let checksumFile = try #require(media.slotFile(named: "slots-65536.crc"))
        checksumFile.failNextSyncs()
        #expect(throws: EngineError.self) { try pool.flush() }
        #expect(pool.hasFailed)
        #expect(pool.status().failure?.contains("slots-65536.crc") == true, "\(pool.status().failure ?? "-")")
        #expect(throws: EngineError.self) { try writeBytes(pool, v, 65536, pattern(13, 4096)) }
        #expect(try readBytes(pool, v, 0, 65536) == pattern(12, 65536))
        pool.close()
    }

    @Test func aFailedIntentMarkStopsThePool() throws {
        let v = try pool.volumes.create(name: "v", size: 1 << 20).id
        try pool.flush()
        let checksumFile = try #require(media.slotFile(named: "slots-65536.crc"))
        checksumFile.failNextSyncs()
        #expect(throws: EngineError.self) { try writeBytes(pool, v, 0, pattern(14, 4096)) }
        #expect(pool.hasFailed)
        pool.close()
    }

    @Test func intentMarksAreClearedByAnIdleCommitAndAtClose() throws {
        let directory = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        // Every commit syncs the checksums here (by default at most one a second does).
        try Self.withPool(directory, Self.checksumsSyncedAt(intervalNanoseconds: 0)) { pool in
            let v = try pool.volumes.create(name: "v", size: 16 << 20).id
            #expect(pool.markedChecksumRegionCount == 0)
            try writeBytes(pool, v, 0, pattern(15, 8192))
            #expect(pool.markedChecksumRegionCount == 1)
            // This commit covers the write but began right after it: the mark stays (hysteresis).
            try pool.flush()
            #expect(pool.markedChecksumRegionCount == 1)
            // The next commit (a snapshot leaves it metadata to write) finds the region idle for a whole
            // interval, with data and checksums synced.
            try pool.snapshots.create(volume: "v", name: "s")
            try pool.flush()
            #expect(pool.markedChecksumRegionCount == 0)
            // A write marks it again (durably, before the data goes down).
            try writeBytes(pool, v, 1 << 20, pattern(16, 8192))
            #expect(pool.markedChecksumRegionCount == 1)
        }
        try Self.withPool(directory) { pool in
            let v = try pool.volumes.id(named: "v")
            #expect(pool.markedChecksumRegionCount == 0)
            #expect(try readBytes(pool, v, 1 << 20, 8192) == pattern(16, 8192))
            #expect(try readBytes(pool, v, 0, 8192) == pattern(15, 8192))
        }
    }

    @Test func flushesBetweenChecksumSyncsLeaveTheMarks() throws {
        let directory = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try Self.withPool(directory, Self.checksumsSyncedAt(intervalNanoseconds: 3_600_000_000_000)) { pool in
            let v = try pool.volumes.create(name: "v", size: 16 << 20).id
            try pool.flush()  // the first commit syncs the checksums
            try writeBytes(pool, v, 0, pattern(17, 8192))
            for name in ["a", "b", "c"] {
                try pool.snapshots.create(volume: "v", name: name)
                try pool.flush()
            }
            // Data and metadata are durable; the checksums are not yet, so the region stays marked.
            #expect(pool.markedChecksumRegionCount == 1)
        }
        // A clean close synced them and cleared every mark.
        try Self.withPool(directory) { pool in
            let v = try pool.volumes.id(named: "v")
            #expect(pool.markedChecksumRegionCount == 0)
            #expect(try readBytes(pool, v, 0, 8192) == pattern(17, 8192))
        }
    }

    @Test func checksumsSurviveReopen() throws {
        let directory = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try Self.withPool(directory) { pool in
            let v = try pool.volumes.create(name: "v", size: 1 << 20).id
            try writeBytes(pool, v, 0, pattern(9, 128 << 10))
            #expect(!pool.status().uncheckedDataSinceBeforeChecksums)
        }
        #expect(FileManager.default.fileExists(atPath: directory + "/data/slots-65536.crc"))
        try Self.withPool(directory) { pool in
            let v = try pool.volumes.id(named: "v")
            let slot = pool.versions(volume: "v", chunk: 1)[0].slot
            let file = try PosixStorageFile(path: directory + "/data/slots-65536.dat")
            try Self.flipByte(in: file, at: slot.index * 65536 + 5)
            #expect(throws: EngineError.self) { _ = try readBytes(pool, v, 65536, 4096) }
            let expected = Array(pattern(9, 128 << 10)[(65536 + 4096)..<(65536 + 8192)])
            #expect(try readBytes(pool, v, 65536 + 4096, 4096) == expected)
            #expect(pool.status().checksumMismatches == 1)
        }
    }

    @Test func poolsWithoutChecksumsAreReadAsUnchecked() throws {
        let directory = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let checksumFile = directory + "/data/slots-65536.crc"
        var off = testOptions()
        off.dataChecksums = false
        try Self.withPool(directory, off) { pool in
            let v = try pool.volumes.create(name: "v", size: 1 << 20).id
            try writeBytes(pool, v, 0, pattern(10, 64 << 10))
        }
        // A pool from before checksums: no checksum file at all.
        try FileManager.default.removeItem(atPath: checksumFile)
        try Self.withPool(directory) { pool in
            let v = try pool.volumes.id(named: "v")
            #expect(try readBytes(pool, v, 0, 64 << 10) == pattern(10, 64 << 10))
            #expect(pool.status().uncheckedDataSinceBeforeChecksums)
            var report = try pool.scrub.runNow()
            #expect(report.uncheckedBytes == 64 << 10 && report.verifiedBytes == 0 && report.damage.isEmpty, "\(report)")
            // What is written from now on is checksummed.
            try writeBytes(pool, v, 0, pattern(11, 8192))
            report = try pool.scrub.runNow()
            #expect(report.verifiedBytes == 8192 && report.uncheckedBytes == 56 << 10, "\(report)")
        }
        // Written with checksums off, the checksums are stale: the next open recomputes them.
        try Self.withPool(directory, off) { pool in
            try writeBytes(pool, try pool.volumes.id(named: "v"), 0, pattern(12, 64 << 10))
        }
        try Self.withPool(directory) { pool in
            let v = try pool.volumes.id(named: "v")
            #expect(try readBytes(pool, v, 0, 64 << 10) == pattern(12, 64 << 10))
            let report = try pool.scrub.runNow()
            #expect(report.verifiedBytes == 64 << 10 && report.damage.isEmpty, "\(report)")
        }
    }

    /// Power cuts with unflushed overwrites (full and partial blocks) over flushed data: after each cut
    /// every sector reads without error, flushed sectors never overwritten read exactly, overwritten
    /// ones hold their flushed value or a later one.
    @Test func powerCutsWithUnflushedOverwritesNeverReadAsErrors() throws {
        let seed = SeededGenerator.seedFromEnvironment()
        var random = SeededGenerator(seed: seed)
        print("DataChecksumTests seed \(seed)")
        let size = 1 << 20
        var media = SimulatedMedia()
        var pool = try Pool(media: media, options: testOptions())
        let v = try pool.volumes.create(name: "v", size: UInt64(size)).id
        var model = SectorModel(sectors: size / SectorModel.sector)
        var value: UInt32 = 1
        func write(_ first: Int, _ count: Int) throws {
            var data: [UInt8] = []
            for s in first..<(first + count) { data += SectorModel.bytes(value, sector: s) }
            try writeBytes(pool, v, UInt64(first * SectorModel.sector), data)
            for s in first..<(first + count) { model.set(s, value) }
            value += 1
        }
        try write(0, model.current.count)
        try pool.flush()
        model.flushed()
        for cut in 0..<20 {
            for _ in 0..<Int.random(in: 1...40, using: &random) {
                let first = Int.random(in: 0..<model.current.count, using: &random)
                let count = min(model.current.count - first, Int.random(in: 1...24, using: &random))
                try write(first, count)
            }
            // Sometimes flush, then overwrite again, so the cut falls between a flush and later writes.
            if Bool.random(using: &random) {
                try pool.flush()
                model.flushed()
                try write(Int.random(in: 0..<(model.current.count - 8), using: &random), 8)
            }
            let image = media.crashImage(using: &random)
            pool.simulateProcessDeath()
            pool = try Pool(media: image, options: testOptions())
            media = image
            var bytes = [UInt8](repeating: 0, count: size)
            do {
                _ = try bytes.withUnsafeMutableBytes { try pool.read(volumeID: v, offset: 0, into: $0) }
            } catch {
                Issue.record("seed \(seed) cut \(cut): reading after the cut failed: \(error)")
                return
            }
            for s in 0..<model.current.count {
                let got = Array(bytes[(s * SectorModel.sector)..<((s + 1) * SectorModel.sector)])
                guard let held = model.allowed(s).first(where: { SectorModel.bytes($0, sector: s) == got }) else {
                    Issue.record("seed \(seed) cut \(cut): sector \(s) holds none of \(model.allowed(s))")
                    return
                }
                model.current[s] = held
            }
            model.flushed()
            #expect(try pool.scrub.runNow().damage.isEmpty, "seed \(seed) cut \(cut)")
        }
        pool.close()
    }
}
