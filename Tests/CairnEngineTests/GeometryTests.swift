@testable import CairnEngine
import CairnTestSupport
import InteropSupport
import Testing

@Suite struct GeometryTests {
    @Test func subBlocksForSmallAndLargeChunks() throws {
        #expect(try ChunkGeometry(chunkSize: 65536).subBlockSize == 4096)
        #expect(try ChunkGeometry(chunkSize: 65536).subBlocksPerChunk == 16)
        #expect(try ChunkGeometry(chunkSize: 4096).fullMask == 1)
        #expect(try ChunkGeometry(chunkSize: 1 << 20).subBlockSize == 16384)
        #expect(try ChunkGeometry(chunkSize: 1 << 20).fullMask == ~0)
    }

    @Test(arguments: [0, 1000, 3000, 65537, 8 << 20])
    func rejectsUnsupportedChunkSizes(size: UInt32) {
        #expect(throws: EngineError.self) { try ChunkGeometry(chunkSize: size) }
    }

    @Test func touchedAndCoveredMasks() throws {
        let g = try ChunkGeometry(chunkSize: 65536)
        #expect(g.touchedMask(from: 0, to: 4096) == 0b1)
        #expect(g.touchedMask(from: 4095, to: 4097) == 0b11)
        #expect(g.coveredMask(from: 4095, to: 4097) == 0)
        #expect(g.coveredMask(from: 4096, to: 12288) == 0b110)
        #expect(g.coveredMask(from: 1, to: 65536) == 0xFFFE)
        #expect(g.touchedMask(from: 0, to: 65536) == 0xFFFF)
    }

    @Test func runsOfBits() {
        var runs: [[Int]] = []
        UInt64(0b1110_0110_0001).forEachRun { runs.append([$0, $1]) }
        #expect(runs == [[0, 1], [5, 2], [9, 3]])
        runs = []
        UInt64.max.forEachRun { runs.append([$0, $1]) }
        #expect(runs == [[0, 64]])
    }
}

@Suite struct SlotAllocatorTests {
    @Test func reusesLowestSlotOnlyAfterCommit() {
        var allocator = SlotAllocator(fileID: 1, chunkSize: 65536)
        let a = allocator.allocate()
        let b = allocator.allocate()
        _ = allocator.allocate()
        #expect(a.index == 0 && b.index == 1)
        let freed = allocator.release(a.index)
        #expect(freed)
        // Pending: not handed out until the free is durable.
        #expect(allocator.allocate().index == 3)
        allocator.makeReusable(a.index)
        #expect(allocator.allocate().index == 0)
    }

    @Test func sharedSlotNeedsEveryReferenceDropped() {
        var allocator = SlotAllocator(fileID: 1, chunkSize: 65536)
        let a = allocator.allocate()
        allocator.retain(a.index)
        let first = allocator.release(a.index)
        let second = allocator.release(a.index)
        #expect(!first && second)
        #expect(allocator.pendingCount == 1)
    }

    @Test func loadingDerivesFreeSlots() {
        var allocator = SlotAllocator(fileID: 1, chunkSize: 65536)
        allocator.retain(5)
        allocator.retain(2)
        allocator.finishLoading()
        #expect(allocator.allocate().index == 0)
        #expect(allocator.allocate().index == 1)
        #expect(allocator.allocate().index == 3)
        #expect(allocator.allocate().index == 4)
        #expect(allocator.allocate().index == 6)
    }
}

@Suite struct ChunkPresenceIndexTests {
    @Test func orderedIterationAcrossPages() {
        var index = ChunkPresenceIndex()
        for chunk: UInt64 in [5, 4096 * 3 + 1, 0, 4095, 1 << 30] { index.insert(chunk) }
        #expect(index.count == 5)
        #expect(index.next(atOrAfter: 0) == 0)
        #expect(index.next(atOrAfter: 1) == 5)
        #expect(index.next(atOrAfter: 6) == 4095)
        #expect(index.next(atOrAfter: 4096) == 4096 * 3 + 1)
        #expect(index.next(atOrAfter: 4096 * 3 + 2) == 1 << 30)
        #expect(index.next(atOrAfter: (1 << 30) + 1) == nil)
        index.remove(4095)
        index.remove(4095)
        #expect(index.count == 4)
        #expect(index.chunks(in: 0..<5000) == [0, 5])
    }

    @Test func randomAgainstSortedSet() {
        let seed = SeededGenerator.seedFromEnvironment()
        var random = SeededGenerator(seed: seed)
        var index = ChunkPresenceIndex()
        var model = Set<UInt64>()
        for _ in 0..<5000 {
            let chunk = UInt64.random(in: 0..<50_000, using: &random)
            if Bool.random(using: &random) {
                index.insert(chunk)
                model.insert(chunk)
            } else {
                index.remove(chunk)
                model.remove(chunk)
            }
        }
        let probe = UInt64.random(in: 0..<50_000, using: &random)
        #expect(index.next(atOrAfter: probe) == model.filter { $0 >= probe }.min(), "seed \(seed)")
        #expect(index.chunks(in: 0..<50_000) == model.sorted(), "seed \(seed)")
    }
}

@Suite struct VersionCodecTests {
    @Test func roundTripsAndRejectsTornBlobs() {
        let versions = [
            ChunkVersion(birth: 1, slot: SlotAddress(file: 1, index: 42), dataMask: 0xF0F0, definedMask: ~0),
            ChunkVersion.zeros(birth: 7, defining: 0b1010),
            ChunkVersion(birth: .max, slot: SlotAddress(file: 65535, index: SlotAddress.indexLimit - 1), dataMask: ~0, definedMask: ~0),
        ]
        let blob = VersionCodec.encode(versions)
        #expect(blob.count == 3 * VersionCodec.recordSize)
        #expect(VersionCodec.decode(blob) == versions)
        #expect(VersionCodec.decode(Array(blob.dropLast())) == nil)
        #expect(VersionCodec.decode([]) == [])
    }
}
