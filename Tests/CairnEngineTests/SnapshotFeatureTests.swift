@_spi(Testing) import CairnEngine
import CairnTestSupport
import InteropSupport
import Glibc
import Testing

@Suite struct SnapshotFeatureTests {
    let media = SimulatedMedia()
    let pool: Pool

    init() throws {
        pool = try Pool(media: media, options: testOptions())
    }

    var slotFile: SimulatedStorageFile { media.slotFile(named: "slots-65536.dat")! }

    func snapshotRead(_ volume: String, _ snapshot: String, _ offset: UInt64, _ length: Int) throws -> [UInt8] {
        let epoch = try pool.snapshots.info(volume: volume, name: snapshot).epoch
        var bytes = [UInt8](repeating: 0xEE, count: length)
        _ = try bytes.withUnsafeMutableBytes {
            try pool.read(volumeID: try pool.volumes.id(named: volume), snapshotEpoch: epoch, offset: offset, into: $0)
        }
        return bytes
    }

    @Test func aWriteAfterASnapshotWritesOnlyWhatItWrites() throws {
        let v = try pool.volumes.create(name: "v", size: 4 << 20).id
        try writeBytes(pool, v, 0, pattern(1, 4 << 20))
        let created = try pool.snapshots.create(volume: "v", name: "s1")
        let timing = try #require(created.creation)
        #expect(timing.writesPaused >= .zero && timing.writesPaused <= timing.total)
        #expect(try pool.snapshots.info(volume: "v", name: "s1").creation == nil)
        var before = slotFile.bytesWritten
        // 4 KiB aligned writes into chunks a snapshot shares: 4 KiB of backend writes each, no copy.
        for i in 0..<64 { try writeBytes(pool, v, UInt64(i) * 65536 + 8192, pattern(2, 4096)) }
        #expect(slotFile.bytesWritten - before == 64 * 4096)
        // The cost does not depend on the number of snapshots.
        for i in 2...100 { try pool.snapshots.create(volume: "v", name: "s\(i)") }
        before = slotFile.bytesWritten
        for i in 0..<64 { try writeBytes(pool, v, UInt64(i) * 65536 + 16384, pattern(3, 4096)) }
        #expect(slotFile.bytesWritten - before == 64 * 4096)
        // An unaligned write completes its sub-block from the snapshot's data: one 4 KiB copy plus the bytes.
        before = slotFile.bytesWritten
        try pool.snapshots.create(volume: "v", name: "s101")
        try writeBytes(pool, v, 100, pattern(4, 512))
        #expect(slotFile.bytesWritten - before == 4096 + 512)
        var expected = pattern(1, 65536)
        expected.replaceSubrange(100..<612, with: pattern(4, 512))
        expected.replaceSubrange(8192..<12288, with: pattern(2, 4096))
        expected.replaceSubrange(16384..<20480, with: pattern(3, 4096))
        #expect(try readBytes(pool, v, 0, 65536) == expected)
        #expect(try snapshotRead("v", "s1", 0, 4 << 20) == pattern(1, 4 << 20))
        #expect(try pool.checker.check().isHealthy)
        pool.close()
    }

    @Test func deleteReclaimsExactlyWhatNothingElseReads() throws {
        let v = try pool.volumes.create(name: "v", size: 4 << 20).id
        try writeBytes(pool, v, 0, pattern(1, 1 << 20))
        try pool.snapshots.create(volume: "v", name: "old")
        try writeBytes(pool, v, 0, pattern(2, 1 << 20))
        try pool.snapshots.create(volume: "v", name: "mid")
        try writeBytes(pool, v, 0, pattern(3, 512 << 10))
        try pool.flush()
        // 1 MiB for "old", 1 MiB written after it, 512 KiB written after "mid".
        #expect(pool.status().usedBytes == 5 << 19)
        try pool.snapshots.delete(volume: "v", name: "old")
        pool.waitForJobs()
        #expect(pool.status().usedBytes == 3 << 19)
        #expect(try snapshotRead("v", "mid", 0, 1 << 20) == pattern(2, 1 << 20))
        try pool.snapshots.delete(volume: "v", name: "mid")
        pool.waitForJobs()
        // Half of "mid"'s data is still the live volume's; the overwritten half goes.
        #expect(pool.status().usedBytes == 1 << 20)
        var expected = pattern(3, 512 << 10) + Array(pattern(2, 1 << 20)[(512 << 10)...])
        #expect(try readBytes(pool, v, 0, 1 << 20) == expected)
        expected = []
        #expect(try pool.checker.check().isHealthy)
        #expect(pool.jobs.list().allSatisfy { $0.state == .succeeded })
        pool.close()
    }

    @Test func rollbackNeedsForceToDestroyNewerSnapshots() throws {
        let v = try pool.volumes.create(name: "v", size: 4 << 20).id
        try writeBytes(pool, v, 0, pattern(1, 65536))
        try pool.snapshots.create(volume: "v", name: "a")
        try writeBytes(pool, v, 0, pattern(2, 65536))
        try pool.snapshots.create(volume: "v", name: "b")
        try writeBytes(pool, v, 4096, pattern(3, 4096))
        #expect(throws: EngineError.self) { try pool.snapshots.rollback(volume: "v", to: "a") }
        try pool.snapshots.rollback(volume: "v", to: "b")
        #expect(try readBytes(pool, v, 0, 65536) == pattern(2, 65536))
        try pool.snapshots.rollback(volume: "v", to: "a", force: true)
        #expect(try readBytes(pool, v, 0, 65536) == pattern(1, 65536))
        #expect(try pool.snapshots.list(volume: "v").map(\.name) == ["a"])
        // Writes after a rollback do not touch the snapshot.
        try writeBytes(pool, v, 0, pattern(4, 100))
        #expect(try snapshotRead("v", "a", 0, 65536) == pattern(1, 65536))
        #expect(try pool.checker.check().isHealthy)
        pool.close()
    }

    @Test func clonesOfClonesAtAnyDepth() throws {
        let v = try pool.volumes.create(name: "v", size: 2 << 20).id
        try writeBytes(pool, v, 0, pattern(1, 2 << 20))
        try pool.snapshots.create(volume: "v", name: "s")
        var parent = ("v", "s")
        var expected = pattern(1, 2 << 20)
        for depth in 1...5 {
            let clone = try pool.volumes.clone(volume: parent.0, snapshot: parent.1, as: "c\(depth)")
            #expect(clone.origin == "\(parent.0)@\(parent.1)")
            let offset = depth * 70_000
            try writeBytes(pool, clone.id, UInt64(offset), pattern(UInt8(10 + depth), 3000))
            expected.replaceSubrange(offset..<(offset + 3000), with: pattern(UInt8(10 + depth), 3000))
            #expect(try readBytes(pool, clone.id, 0, 2 << 20) == expected, "depth \(depth)")
            try pool.snapshots.create(volume: "c\(depth)", name: "s")
            parent = ("c\(depth)", "s")
        }
        // The original and every snapshot along the chain are untouched.
        #expect(try readBytes(pool, v, 0, 2 << 20) == pattern(1, 2 << 20))
        #expect(throws: EngineError.self) { try pool.snapshots.delete(volume: "v", name: "s") }
        #expect(throws: EngineError.self) { try pool.volumes.delete(name: "c1", force: true) }
        #expect(try pool.checker.check().isHealthy)
        pool.close()
    }

    @Test func changedExtentsComeFromMetadata() throws {
        let v = try pool.volumes.create(name: "v", size: 8 << 20).id
        try writeBytes(pool, v, 0, pattern(1, 8 << 20))
        try pool.snapshots.create(volume: "v", name: "a")
        try writeBytes(pool, v, 1 << 20, pattern(2, 8192))
        try pool.discard(volumeID: v, offset: 3 << 20, length: 65536, mode: .trim)
        try pool.snapshots.create(volume: "v", name: "b")
        try writeBytes(pool, v, 5 << 20, pattern(3, 4096))
        #expect(
            try pool.snapshots.changedExtents(volume: "v", from: "a", to: "b")
                == [ChangedExtent(offset: 1 << 20, length: 8192), ChangedExtent(offset: 3 << 20, length: 65536)])
        #expect(
            try pool.snapshots.changedExtents(volume: "v", from: "b", to: nil) == [
                ChangedExtent(offset: 5 << 20, length: 4096)
            ])
        #expect(try pool.snapshots.changedExtents(volume: "v", from: "a", to: nil).count == 3)
        #expect(throws: EngineError.self) { try pool.snapshots.changedExtents(volume: "v", from: "b", to: "a") }
        pool.close()
    }

    @Test func dedupSharesIdenticalChunksAndWritesUnshare() throws {
        let a = try pool.volumes.create(name: "a", size: 4 << 20).id
        let b = try pool.volumes.create(name: "b", size: 4 << 20).id
        try writeBytes(pool, a, 0, pattern(7, 2 << 20))
        try writeBytes(pool, b, 0, pattern(7, 2 << 20))
        try writeBytes(pool, b, 3 << 20, pattern(8, 1 << 20))
        try pool.flush()
        #expect(pool.status().usedBytes == 5 << 20)
        let job = try pool.dedup.start()
        pool.waitForJobs()
        #expect(pool.jobs.job(job)?.state == .succeeded, "\(String(describing: pool.jobs.job(job)))")
        #expect(pool.status().usedBytes < 4 << 20)
        #expect(pool.status().sharedBytes > 0)
        // A write to one side gets its own copy; the other side keeps its data.
        try writeBytes(pool, a, 4096, pattern(9, 4096))
        #expect(try readBytes(pool, b, 0, 2 << 20) == pattern(7, 2 << 20))
        var expected = pattern(7, 2 << 20)
        expected.replaceSubrange(4096..<8192, with: pattern(9, 4096))
        #expect(try readBytes(pool, a, 0, 2 << 20) == expected)
        #expect(try pool.checker.check().isHealthy)
        pool.close()
    }

    @Test func copyAndWriteCopiesInsideTheEngine() throws {
        let v = try pool.volumes.create(name: "v", size: 4 << 20).id
        try writeBytes(pool, v, 0, pattern(1, 65536))
        try pool.snapshots.create(volume: "v", name: "s")
        let before = slotFile.bytesWritten
        try pattern(5, 4096).withUnsafeBytes {
            try pool.copyAndWrite(
                volumeID: v, source: 0, target: 1 << 20, copySize: 65536, buffer: $0, bufferOffset: 16384, fua: false)
        }
        var expected = pattern(1, 65536)
        expected.replaceSubrange(16384..<20480, with: pattern(5, 4096))
        #expect(try readBytes(pool, v, 1 << 20, 65536) == expected)
        #expect(try readBytes(pool, v, 0, 65536) == pattern(1, 65536))
        // The copy plus the buffer: one chunk of backend writes, and no further copy for the target.
        #expect(slotFile.bytesWritten - before == 65536)
        let sharing = try pool.sharingExtents(volumeID: v, offset: 0, length: 2 << 20)
        #expect(sharing.first?.shared == true)
        #expect(sharing.contains { $0.offset <= 1 << 20 && $0.offset + $0.length > 1 << 20 && !$0.shared })
        let again = slotFile.bytesWritten
        try writeBytes(pool, v, (1 << 20) + 4096, pattern(6, 4096))
        #expect(slotFile.bytesWritten - again == 4096)
        for (source, target, size, offset, count) in [
            (0, 1000, 65536, 0, 10), (0, 65536, 4096, 0, 10), (0, 65536, 65536, 65530, 10), (0, 4 << 20, 65536, 0, 1),
        ] {
            #expect(throws: EngineError.self, "\(source) \(target) \(size) \(offset) \(count)") {
                try [UInt8](repeating: 1, count: count).withUnsafeBytes {
                    try pool.copyAndWrite(
                        volumeID: v, source: UInt64(source), target: UInt64(target), copySize: UInt32(size), buffer: $0,
                        bufferOffset: UInt32(offset), fua: false)
                }
            }
        }
        #expect(try pool.checker.check().isHealthy)
        pool.close()
    }

    @Test func preservedDataMovesToTheOtherStoreOnFirstOverwrite() throws {
        try pool.stores.add(name: "disk2", path: "/disk2")
        let v = try pool.volumes.create(name: "v", size: 4 << 20, preserveStore: "disk2").id
        try writeBytes(pool, v, 0, pattern(1, 1 << 20))
        try pool.snapshots.create(volume: "v", name: "s")
        let preserved = "/disk2/slots-65536.dat"
        // One host write; the engine copies the old chunk to the other store, then writes in place.
        try writeBytes(pool, v, 4096, pattern(2, 4096))
        #expect(media.slotFile(named: preserved)?.bytesWritten == 65536)
        // The live volume keeps its data in the pool; the snapshot reads the preserved copy.
        var expected = pattern(1, 1 << 20)
        expected.replaceSubrange(4096..<8192, with: pattern(2, 4096))
        #expect(try readBytes(pool, v, 0, 1 << 20) == expected)
        #expect(try snapshotRead("v", "s", 0, 1 << 20) == pattern(1, 1 << 20))
        // Later writes to the same chunk are in place, no further copy.
        try writeBytes(pool, v, 8192, pattern(3, 4096))
        #expect(media.slotFile(named: preserved)?.bytesWritten == 65536)
        #expect(try pool.checker.check().isHealthy)
        // A power cut right after: the snapshot is intact, the flushed state is back.
        try pool.flush()
        var random = SeededGenerator(seed: 3)
        let image = media.crashImage(using: &random)
        pool.simulateProcessDeath()
        let reopened = try Pool(media: image, options: testOptions())
        defer { reopened.close() }
        let epoch = try reopened.snapshots.info(volume: "v", name: "s").epoch
        var snapshot = [UInt8](repeating: 0, count: 1 << 20)
        _ = try snapshot.withUnsafeMutableBytes {
            try reopened.read(volumeID: try reopened.volumes.id(named: "v"), snapshotEpoch: epoch, offset: 0, into: $0)
        }
        #expect(snapshot == pattern(1, 1 << 20))
        #expect(try reopened.volumes.info(named: "v").preserveStore == "disk2")
        #expect(try reopened.checker.check().isHealthy)
        #expect(throws: EngineError.self) {
            try reopened.volumes.create(name: "w", size: 1 << 20, preserveStore: "nope")
        }
    }
}
