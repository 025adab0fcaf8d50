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
}
