import CairnIO
import CairnTestSupport
import Testing

@testable import CairnEngine

/// Recomputing the checksums of a marked region after an unclean stop, where the crash dropped the slot
/// file's unsynced growth but kept checksums written for it.
@Suite struct ChecksumRecomputeTests {
    @Test func checksumsPastTheEndOfTheFileBecomeUnknown() throws {
        let data = SimulatedStorageFile(path: "slots.dat")
        let sidecar = SimulatedStorageFile(path: "slots.crc")
        let file = ChecksummedSlotFile(
            data, checksums: try ChecksumStore(file: sidecar), counters: ChecksumCounters(), sidecarFailed: { $0 })
        let block = Int(ChecksumLayout.blockSize)
        let content = [UInt8](repeating: 0x5A, count: 2 * block)
        try content.withUnsafeBytes { try file.write($0, at: 0) }
        #expect(try file.checksums.checksums(from: 1, count: 1) != [ChecksumLayout.unknown])
        // The crash: the file lost its second block (its growth was never synced), the checksums did not.
        try data.truncate(to: UInt64(block))

        try file.recompute(regions: [0])
        #expect(try file.checksums.checksums(from: 0, count: 1) == [ChecksumLayout.checksum(content[0..<block].withUnsafeBytes { $0 })])
        #expect(try file.checksums.checksums(from: 1, count: 4) == [UInt32](repeating: ChecksumLayout.unknown, count: 4))
        // The first partial write into the lost block (a free slot reused) reads zeros and accepts them.
        try [UInt8](repeating: 0x77, count: 512).withUnsafeBytes { try file.write($0, at: UInt64(block) + 512) }
        var back = [UInt8](repeating: 0, count: block)
        try back.withUnsafeMutableBytes { try file.read(into: $0, at: UInt64(block)) }
        #expect(back == [UInt8](repeating: 0, count: 512) + [UInt8](repeating: 0x77, count: 512) + [UInt8](repeating: 0, count: block - 1024))
    }

    /// Opening a pool recomputes the checksums of a marked region, then cuts the slot file back to the
    /// slots its metadata maps: the checksums of the cut slots must go too. A stale one made the first
    /// write that read such a slot again (a partial block, once the slot was handed out afresh) fail with
    /// a "data checksum mismatch" over zeros, although nothing was damaged.
    @Test func truncationClearsTheChecksumsOfTheCutBlocks() throws {
        let data = SimulatedStorageFile(path: "slots.dat")
        let sidecar = SimulatedStorageFile(path: "slots.crc")
        let file = ChecksummedSlotFile(
            data, checksums: try ChecksumStore(file: sidecar), counters: ChecksumCounters(), sidecarFailed: { $0 })
        let block = Int(ChecksumLayout.blockSize)
        let content = [UInt8](repeating: 0x5A, count: 4 * block)
        try content.withUnsafeBytes { try file.write($0, at: 0) }
        try file.recompute(regions: [0])

        try file.truncate(to: UInt64(2 * block))
        #expect(try data.size() == UInt64(2 * block))
        let kept = ChecksumLayout.checksum(content[0..<block].withUnsafeBytes { $0 })
        #expect(try file.checksums.checksums(from: 0, count: 4) == [kept, kept, ChecksumLayout.unknown, ChecksumLayout.unknown])
        // The cut block handed out again: a partial write reads zeros there and accepts them.
        try [UInt8](repeating: 0x77, count: 512).withUnsafeBytes { try file.write($0, at: UInt64(3 * block) + 512) }
        var back = [UInt8](repeating: 0xEE, count: block)
        try back.withUnsafeMutableBytes { try file.read(into: $0, at: UInt64(3 * block)) }
        #expect(back == [UInt8](repeating: 0, count: 512) + [UInt8](repeating: 0x77, count: 512) + [UInt8](repeating: 0, count: block - 1024))
        #expect(try file.damagedBlocks(at: 0, length: 4 * block).damaged.isEmpty)
    }

    /// A cut inside a block keeps its head: verified first, checksummed again over head and zeros.
    @Test func truncationInsideABlockRechecksumsItsHead() throws {
        let data = SimulatedStorageFile(path: "slots.dat")
        let file = ChecksummedSlotFile(
            data, checksums: try ChecksumStore(file: SimulatedStorageFile(path: "slots.crc")), counters: ChecksumCounters(),
            sidecarFailed: { $0 })
        let block = Int(ChecksumLayout.blockSize)
        try [UInt8](repeating: 0x33, count: 2 * block).withUnsafeBytes { try file.write($0, at: 0) }
        try file.truncate(to: UInt64(block + 100))
        var back = [UInt8](repeating: 0xEE, count: block)
        try back.withUnsafeMutableBytes { try file.read(into: $0, at: UInt64(block)) }
        #expect(back == [UInt8](repeating: 0x33, count: 100) + [UInt8](repeating: 0, count: block - 100))
        // Damage in the head is not laundered into a good checksum: the cut refuses.
        try [UInt8](repeating: 0x44, count: 1).withUnsafeBytes { try data.write($0, at: UInt64(block + 10)) }
        #expect(throws: ChecksumMismatch.self) { try file.truncate(to: UInt64(block + 50)) }
    }

    /// The cut is a change like a write: under a write intent, so a crash before the next checksum sync
    /// recomputes the region from whatever the disk kept, whether the cut reached the disk or not.
    @Test func truncationMarksTheRegionItClears() throws {
        let data = SimulatedStorageFile(path: "slots.dat")
        let sidecar = SimulatedStorageFile(path: "slots.crc")
        let checksums = try ChecksumStore(file: sidecar)
        let file = ChecksummedSlotFile(data, checksums: checksums, counters: ChecksumCounters(), sidecarFailed: { $0 })
        let block = Int(ChecksumLayout.blockSize)
        try [UInt8](repeating: 0x5A, count: 3 * block).withUnsafeBytes { try file.write($0, at: 0) }
        try data.sync()
        try checksums.writeDirtyPages()
        try checksums.sync()
        try checksums.finishCommit(checksums.beginCommit())
        try checksums.finishCommit(checksums.beginCommit())
        #expect(checksums.markedRegions.isEmpty)
        try sidecar.sync()

        try file.truncate(to: UInt64(block))
        #expect(checksums.markedRegions == [0])
        #expect(try ChecksumStore(file: sidecar).markedRegions == [0])
    }
}
