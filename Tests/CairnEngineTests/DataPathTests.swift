import CairnEngine
import CairnTestSupport
import Foundation
import Testing

@Suite struct DataPathTests {
    let pool: Pool
    let volume: UInt64

    init() throws {
        pool = try Pool(media: SimulatedMedia(), options: testOptions())
        volume = try pool.volumes.create(name: "v", size: 16 << 20).id
    }

    @Test func unwrittenReadsAsZerosAndHoles() throws {
        var buffer = [UInt8](repeating: 0xFF, count: 200_000)
        let extents = try buffer.withUnsafeMutableBytes { try pool.read(volumeID: volume, offset: 100, into: $0) }
        #expect(buffer.allSatisfy { $0 == 0 })
        #expect(extents == [ReadExtent(offset: 100, length: 200_000, isHole: true)])
        #expect(try pool.snapshots.allocationExtents(volumeID: volume, offset: 0, length: 16 << 20)
            == [AllocationExtent(length: 16 << 20, isHole: true)])
        pool.close()
    }

    @Test func unalignedWritesPadWithZerosAndKeepNeighbours() throws {
        try writeBytes(pool, volume, 1000, pattern(1, 100))
        try writeBytes(pool, volume, 1100, pattern(2, 50))
        var expected = [UInt8](repeating: 0, count: 8192)
        expected.replaceSubrange(1000..<1100, with: pattern(1, 100))
        expected.replaceSubrange(1100..<1150, with: pattern(2, 50))
        #expect(try readBytes(pool, volume, 0, 8192) == expected)
        // Crossing a chunk boundary, unaligned at both ends.
        try writeBytes(pool, volume, 65536 - 300, pattern(3, 700))
        #expect(try readBytes(pool, volume, 65536 - 300, 700) == pattern(3, 700))
        #expect(try readBytes(pool, volume, 65536 + 400, 3696) == [UInt8](repeating: 0, count: 3696))
        let extents = try pool.snapshots.allocationExtents(volumeID: volume, offset: 0, length: 1 << 20)
        #expect(extents == [
            AllocationExtent(length: 4096, isHole: false),
            AllocationExtent(length: 65536 - 8192, isHole: true),
            AllocationExtent(length: 8192, isHole: false),
            AllocationExtent(length: (1 << 20) - 65536 - 4096, isHole: true),
        ])
        pool.close()
    }

    @Test func largeWriteSpansChunksAndReadsBackInOnePiece() throws {
        let data = pattern(9, 3 << 20)
        try writeBytes(pool, volume, 12345 * 512, data)
        #expect(try readBytes(pool, volume, 12345 * 512, data.count) == data)
        pool.close()
    }

    @Test func trimAndWriteZeroes() throws {
        try writeBytes(pool, volume, 0, pattern(4, 1 << 20))
        // TRIM of whole sub-blocks deallocates; partial edges stay.
        try pool.discard(volumeID: volume, offset: 1000, length: 70_000, mode: .trim)
        var expected = pattern(4, 1 << 20)
        expected.replaceSubrange(4096..<69632, with: repeatElement(0, count: 65536))
        #expect(try readBytes(pool, volume, 0, 1 << 20) == expected)
        // WRITE_ZEROES zeroes exactly, edges included.
        try pool.discard(volumeID: volume, offset: 100_000, length: 10_000, mode: .zero)
        expected.replaceSubrange(100_000..<110_000, with: repeatElement(0, count: 10_000))
        #expect(try readBytes(pool, volume, 0, 1 << 20) == expected)
        // NO_HOLE zeroes keep the range allocated.
        try pool.write(volumeID: volume, offset: 2 << 20, source: .zeros(length: 65536), fua: false)
        #expect(try readBytes(pool, volume, 2 << 20, 65536) == [UInt8](repeating: 0, count: 65536))
        #expect(try pool.snapshots.allocationExtents(volumeID: volume, offset: 2 << 20, length: 65536)
            == [AllocationExtent(length: 65536, isHole: false)])
        // Trimming everything gives every slot back.
        try pool.discard(volumeID: volume, offset: 0, length: 16 << 20, mode: .trim)
        try pool.flush()
        #expect(pool.status().usedBytes == 0)
        #expect(try pool.checker.check().isHealthy)
        pool.close()
    }

    @Test func outOfBoundsAndOutOfSpaceChangeNothing() throws {
        #expect(throws: EngineError.self) { try writeBytes(pool, volume, (16 << 20) - 100, pattern(1, 200)) }
        #expect(throws: EngineError.self) { _ = try readBytes(pool, volume, UInt64.max - 10, 100) }
        (pool.media as! SimulatedMedia).setAvailableBytes(1 << 20)
        do {
            try writeBytes(pool, volume, 0, pattern(1, 4096))
            Issue.record("write needing a new chunk succeeded with the pool out of space")
        } catch let error as EngineError {
            #expect(error.code == .noSpace)
        }
        #expect(try pool.snapshots.allocationExtents(volumeID: volume, offset: 0, length: 65536)
            == [AllocationExtent(length: 65536, isHole: true)])
        (pool.media as! SimulatedMedia).setAvailableBytes(nil)
        try writeBytes(pool, volume, 0, pattern(1, 4096))
        #expect(try pool.checker.check().isHealthy)
        pool.close()
    }

    @Test func concurrentSmallWritesIntoOneFreshSubBlockAreAllKept() async throws {
        // Eight writers put 512-byte pieces into the same fresh 4 KiB sub-block at once: each must pad
        // the sub-block, so without chunk locks one writer's zero padding would wipe another's bytes.
        let pool = self.pool
        let volume = self.volume
        for round in 0..<50 {
            let base = UInt64(round) * 65536
            await withTaskGroup(of: Void.self) { group in
                for piece in 0..<8 {
                    group.addTask {
                        try? writeBytes(pool, volume, base + UInt64(piece * 512), pattern(UInt8(piece + 1), 512))
                    }
                }
            }
            let expected = (0..<8).flatMap { pattern(UInt8($0 + 1), 512) }
            #expect(try readBytes(pool, volume, base, 4096) == expected, "round \(round)")
        }
        pool.close()
    }
}
