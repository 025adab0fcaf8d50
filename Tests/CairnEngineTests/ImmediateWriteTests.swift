@_spi(Testing) import CairnEngine
import CairnIO
import CairnTestSupport
import Testing

/// `Pool.writeIfImmediate`: only a plain in-place overwrite is done on the caller's thread; everything
/// else is refused having changed nothing, and the blocking path then writes it as before.
@Suite struct ImmediateWriteTests {
    let media = SimulatedMedia()
    let pool: Pool

    init() throws {
        pool = try Pool(media: media, options: testOptions())
    }

    func immediate(_ volume: UInt64, _ offset: UInt64, _ bytes: [UInt8]) throws -> Bool {
        try bytes.withUnsafeBytes { try pool.writeIfImmediate(volumeID: volume, offset: offset, bytes: $0) }
    }

    @Test("overwrites and new blocks in a chunk's own slot are immediate, read back, and are checksummed")
    func overwriteIsImmediate() throws {
        let v = try pool.volumes.create(name: "v", size: 1 << 20).id
        try writeBytes(pool, v, 0, pattern(1, 65536))
        #expect(try immediate(v, 8192, pattern(2, 4096)))
        #expect(try immediate(v, 16384, pattern(3, 16384)))
        var expected = pattern(1, 65536)
        expected.replaceSubrange(8192..<12288, with: pattern(2, 4096))
        expected.replaceSubrange(16384..<32768, with: pattern(3, 16384))
        #expect(try readBytes(pool, v, 0, 65536) == expected)
        // A block of the chunk not written yet, in the slot the chunk already has: only the version's
        // data mask grows (in memory, committed like any write).
        try writeBytes(pool, v, 65536, pattern(4, 4096))
        #expect(try immediate(v, 65536 + 32768, pattern(5, 8192)))
        try pool.flush()
        #expect(try readBytes(pool, v, 65536 + 32768, 8192) == pattern(5, 8192))
        #expect(try readBytes(pool, v, 65536 + 4096, 4096) == [UInt8](repeating: 0, count: 4096))
        #expect(pool.status().immediateWrites == 3)
        // Its checksum is the new data's: damage to it is still caught.
        let slot = pool.versions(volume: "v", chunk: 0).last!.slot.index * 65536
        try DataChecksumTests.flipByte(in: media.slotFile(named: "slots-65536.dat")!, at: slot + 8192 + 7)
        #expect(throws: EngineError.self) { _ = try readBytes(pool, v, 8192, 4096) }
        #expect(try readBytes(pool, v, 16384, 16384) == pattern(3, 16384))
    }

    @Test("refused, changing nothing: a new chunk, a snapshot's chunk, two chunks, a partial block, a clone group")
    func refusals() throws {
        let v = try pool.volumes.create(name: "v", size: 1 << 20).id
        // Nothing written there yet: a new slot and a metadata change.
        #expect(try !immediate(v, 0, pattern(1, 4096)))
        #expect(try readBytes(pool, v, 0, 4096) == [UInt8](repeating: 0, count: 4096))
        try writeBytes(pool, v, 0, pattern(1, 128 << 10))
        // Across two chunks, and a block only partly covered (its checksum needs a read).
        #expect(try !immediate(v, 65536 - 4096, pattern(2, 8192)))
        #expect(try !immediate(v, 512, pattern(2, 512)))
        // A snapshot reads the chunk: copy-on-write, never in place.
        try pool.snapshots.create(volume: "v", name: "s")
        #expect(try !immediate(v, 4096, pattern(3, 4096)))
        #expect(try readBytes(pool, v, 0, 128 << 10) == pattern(1, 128 << 10))
        #expect(pool.status().immediateWrites == 0)
        // The blocking path takes it; the snapshot keeps the old bytes, and the new version is then
        // the volume's own again: the next overwrite is immediate.
        try writeBytes(pool, v, 4096, pattern(3, 4096))
        #expect(try immediate(v, 4096, pattern(4, 4096)))
        let snapshot = try #require(pool.snapshots.epochs(volumeID: v).first?.epoch)
        var old = [UInt8](repeating: 0, count: 4096)
        _ = try old.withUnsafeMutableBytes { try pool.read(volumeID: v, snapshotEpoch: snapshot, offset: 4096, into: $0) }
        #expect(old == Array(pattern(1, 128 << 10)[4096..<8192]))
        // A clone group: its writes go through the group first.
        _ = try pool.volumes.create(name: "src", size: 1 << 20)
        _ = try pool.cloneGroups.add(source: "src", name: "c")
        #expect(try !immediate(v, 8192, pattern(5, 4096)))
    }

    @Test("a new block refused by the slot file (its intent region unmarked by a commit) changes no mapping")
    func refusedNewBlockInstallsNothing() throws {
        let pool = try Pool(media: SimulatedMedia(), options: DataChecksumTests.checksumsSyncedAt(intervalNanoseconds: 0))
        let v = try pool.volumes.create(name: "v", size: 1 << 20).id
        try writeBytes(pool, v, 0, pattern(1, 4096))
        // Commits that find the region idle unmark it (a metadata change gives each one something to
        // write): marking it again takes a sync, so the slot file refuses the immediate write.
        try pool.flush()
        for index in 0..<3 where pool.markedChecksumRegionCount > 0 {
            _ = try pool.volumes.create(name: "other\(index)", size: 1 << 20)
            try pool.flush()
        }
        try #require(pool.markedChecksumRegionCount == 0)
        let before = pool.versions(volume: "v", chunk: 0)
        #expect(try pattern(2, 4096).withUnsafeBytes { try pool.writeIfImmediate(volumeID: v, offset: 8192, bytes: $0) } == false)
        #expect(pool.versions(volume: "v", chunk: 0) == before)
        // The blocking path then writes it, and only then does the block count as data.
        try writeBytes(pool, v, 8192, pattern(2, 4096))
        #expect(try readBytes(pool, v, 8192, 4096) == pattern(2, 4096))
        #expect(pool.versions(volume: "v", chunk: 0) != before)
    }

    @Test("an immediate write held up past the stall limit closes the path: the next one is refused, and counted")
    func heldUpWriteClosesThePath() throws {
        var options = testOptions()
        options.immediateWriteStallLimit = .zero
        let pool = try Pool(media: SimulatedMedia(), options: options)
        let v = try pool.volumes.create(name: "v", size: 1 << 20).id
        try writeBytes(pool, v, 0, pattern(1, 65536))
        let write = { (seed: UInt8) in
            try pattern(seed, 4096).withUnsafeBytes { try pool.writeIfImmediate(volumeID: v, offset: 4096, bytes: $0) }
        }
        #expect(try write(2))
        #expect(try !write(3))
        #expect(pool.status().immediateWrites == 1 && pool.status().immediateWritesThrottled == 1)
        #expect(try readBytes(pool, v, 4096, 4096) == pattern(2, 4096))
    }

    @Test("out of range and a failed pool are errors, as on the blocking path")
    func errors() throws {
        let v = try pool.volumes.create(name: "v", size: 1 << 20).id
        try writeBytes(pool, v, 0, pattern(1, 65536))
        #expect(throws: EngineError.self) { _ = try immediate(v, (1 << 20) - 2048, pattern(2, 4096)) }
        _ = pool.failStop(file: "/pool/slots-65536.dat", call: "fdatasync", error: EngineError(.ioFailure, "EIO"))
        #expect(throws: EngineError.self) { _ = try immediate(v, 0, pattern(2, 4096)) }
        #expect(try readBytes(pool, v, 0, 65536) == pattern(1, 65536))
    }
}
