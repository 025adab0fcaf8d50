@_spi(Testing) import CairnEngine
import CairnTestSupport
import Testing

/// `Pool.copyVolumeRange` (SCSI EXTENDED COPY inside the engine): aligned chunks are shared, the rest is
/// copied, snapshots and sources keep their data, and the pool stays consistent.
@Suite struct ExtendedCopyTests {
    let media = SimulatedMedia()
    let pool: Pool

    init() throws {
        pool = try Pool(media: media, options: testOptions())
    }

    var slotFile: SimulatedStorageFile { media.slotFile(named: "slots-65536.dat")! }

    @Test func alignedChunksAreSharedWithoutWritingData() throws {
        let a = try pool.volumes.create(name: "a", size: 4 << 20).id
        let b = try pool.volumes.create(name: "b", size: 4 << 20).id
        try writeBytes(pool, a, 0, pattern(1, 2 << 20))
        try writeBytes(pool, b, 0, pattern(9, 4 << 20))
        try pool.flush()
        let before = slotFile.bytesWritten
        let report = try pool.copyVolumeRange(
            from: a, sourceOffset: 0, to: b, targetOffset: 1 << 20, length: 2 << 20, fua: true)
        #expect(report.sharedChunks == 32)
        #expect(report.copiedBytes == 0)
        #expect(slotFile.bytesWritten == before)
        #expect(pool.status().sharedBytes == 2 << 20)
        var expected = pattern(9, 4 << 20)
        expected.replaceSubrange((1 << 20)..<(3 << 20), with: pattern(1, 2 << 20))
        #expect(try readBytes(pool, b, 0, 4 << 20) == expected)
        // A write to the source afterwards does not show through in the copy, and the other way round.
        try writeBytes(pool, a, 4096, pattern(3, 4096))
        try writeBytes(pool, b, (1 << 20) + 65536, pattern(4, 4096))
        #expect(try readBytes(pool, b, 1 << 20, 4096) == Array(pattern(1, 2 << 20)[0..<4096]))
        #expect(try readBytes(pool, b, (1 << 20) + 4096, 4096) == Array(pattern(1, 2 << 20)[4096..<8192]))
        #expect(try readBytes(pool, a, 65536, 4096) == Array(pattern(1, 2 << 20)[65536..<69632]))
        #expect(try pool.checker.check().isHealthy)
        pool.close()
    }

    @Test func unalignedRangesAreCopiedAndHolesStayZero() throws {
        let a = try pool.volumes.create(name: "a", size: 4 << 20).id
        let b = try pool.volumes.create(name: "b", size: 4 << 20).id
        try writeBytes(pool, a, 0, pattern(1, 1 << 20))
        try writeBytes(pool, b, 0, pattern(9, 4 << 20))
        // Source 512 bytes off the chunk grid: nothing lines up, everything is copied; the hole in
        // [1 MiB, 1.5 MiB) of the source reads as zeros in the target afterwards.
        let length: UInt64 = (3 << 19) - 512
        let report = try pool.copyVolumeRange(
            from: a, sourceOffset: 512, to: b, targetOffset: 2 << 20, length: length, fua: false)
        #expect(report.sharedChunks == 0)
        #expect(report.copiedBytes == length)
        var source = try readBytes(pool, a, 512, Int(length))
        #expect(try readBytes(pool, b, 2 << 20, Int(length)) == source)
        #expect(source[((1 << 20) - 512)...].allSatisfy { $0 == 0 })
        // From a snapshot: the copy sees the snapshot, not later writes.
        try pool.snapshots.create(volume: "a", name: "s")
        try writeBytes(pool, a, 0, pattern(5, 1 << 20))
        let epoch = try pool.snapshots.info(volume: "a", name: "s").epoch
        _ = try pool.copyVolumeRange(
            from: a, snapshotEpoch: epoch, sourceOffset: 0, to: b, targetOffset: 0, length: 1 << 20, fua: false)
        source = pattern(1, 1 << 20)
        #expect(try readBytes(pool, b, 0, 1 << 20) == source)
        #expect(try pool.checker.check().isHealthy)
        pool.close()
    }

    @Test func overlappingRangesOfOneVolumeCopyLikeMemmove() throws {
        let v = try pool.volumes.create(name: "v", size: 4 << 20).id
        let original = pattern(6, 2 << 20)
        try writeBytes(pool, v, 0, original)
        // Up by one chunk (shareable, overlapping), then down by 4 KiB (unaligned, overlapping).
        _ = try pool.copyVolumeRange(from: v, sourceOffset: 0, to: v, targetOffset: 65536, length: 1 << 20, fua: false)
        var expected = original
        expected.replaceSubrange(65536..<(65536 + (1 << 20)), with: original[0..<(1 << 20)])
        #expect(try readBytes(pool, v, 0, 2 << 20) == expected)
        _ = try pool.copyVolumeRange(from: v, sourceOffset: 4096, to: v, targetOffset: 0, length: 1 << 20, fua: false)
        let shifted = Array(expected[4096..<(4096 + (1 << 20))])
        expected.replaceSubrange(0..<(1 << 20), with: shifted)
        #expect(try readBytes(pool, v, 0, 2 << 20) == expected)
        #expect(try pool.checker.check().isHealthy)
        pool.close()
    }

    @Test func refusalsChangeNothing() throws {
        let a = try pool.volumes.create(name: "a", size: 1 << 20).id
        let b = try pool.volumes.create(name: "b", size: 1 << 20).id
        try writeBytes(pool, b, 0, pattern(2, 1 << 20))
        #expect(throws: EngineError.self) {
            try pool.copyVolumeRange(from: a, sourceOffset: 65536, to: b, targetOffset: 0, length: 1 << 20, fua: false)
        }
        #expect(throws: EngineError.self) {
            try pool.copyVolumeRange(from: a, sourceOffset: 0, to: b, targetOffset: 65536, length: 1 << 20, fua: false)
        }
        #expect(throws: EngineError.self) {
            try pool.copyVolumeRange(from: a, sourceOffset: 0, to: 999, targetOffset: 0, length: 4096, fua: false)
        }
        #expect(try readBytes(pool, b, 0, 1 << 20) == pattern(2, 1 << 20))
        pool.close()
    }
}
