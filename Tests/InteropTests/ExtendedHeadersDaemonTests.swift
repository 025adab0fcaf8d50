import CairnAPI
import Foundation
import InteropSupport
import Testing

/// qemu 10 (from bookworm-backports, extracted by scripts/test) negotiates NBD_OPT_EXTENDED_HEADERS with
/// the daemon: 32-byte requests, extended reply chunks and BLOCK_STATUS_EXT with 64-bit lengths.
@Suite("qemu 10 extended headers against cairn serve")
struct ExtendedHeadersDaemonTests {
    @Test("write, read -P, zeroes, discard and map over extended headers")
    func writeReadMap() async throws {
        try #require(FileManager.default.isExecutableFile(atPath: Tools.qemu10IO), "qemu 10 missing: run scripts/test")
        try await withDaemon { daemon in
            try await daemon.createVolume("x", "48M")
            try await daemon.qemuIOOK(
                "x",
                [
                    "write -P 0x42 0 1m", "write -z 1m 1m", "write -P 0x43 4m 64k",
                    "write -P 0x44 \(5 * MiB + 777) 5555",
                    "writev -P 0x45 8m 4k 512 3584", "write -P 0x46 \(12 * MiB) 32m", "discard \(13 * MiB) 1m",
                ],
                binary: Tools.qemu10IO)
            try await daemon.qemuIOOK(
                "x",
                [
                    "read -P 0x42 0 1m", "read -P 0 1m 3m", "read -P 0x43 4m 64k", "read -P 0x44 \(5 * MiB + 777) 5555",
                    "read -P 0 \(5 * MiB) 777", "readv -P 0x45 8m 3584 512 4k", "read -P 0x46 \(12 * MiB) 1m",
                    "read -P 0 \(13 * MiB) 1m", "read -P 0x46 \(14 * MiB) 30m", "read -P 0 \(44 * MiB) 4m",
                ],
                binary: Tools.qemu10IO)
            let wrong = try await daemon.qemuIO("x", ["read -P 0x43 0 4k"], binary: Tools.qemu10IO)
            #expect(wrong.qemuIOPatternFailed, "\(wrong)")
            let map = coalesce(try await daemon.qemuImgMap("x", binary: Tools.qemu10Img))
            let expected: [Range<Int>] = [
                0..<(2 * MiB), (4 * MiB)..<(4 * MiB + 64 * KiB), (5 * MiB)..<(5 * MiB + 8192),
                (8 * MiB)..<(8 * MiB + 8192), (12 * MiB)..<(13 * MiB), (14 * MiB)..<(44 * MiB),
            ]
            #expect(dataRanges(map) == expected, "\(map)")
            // Both generations of qemu agree on the contents.
            let compare = try await runTool(
                Tools.qemu10Img, ["compare", "-f", "raw", "-F", "raw", daemon.uri("x"), daemon.uri("x")])
            #expect(compare.status == 0, "\(compare)")
            try await daemon.expectHealthy()
        }
    }

    @Test("a hole longer than 4 GiB is one 64-bit extent; qemu 7.2 and qemu 10 maps agree")
    func hugeHole() async throws {
        try #require(FileManager.default.isExecutableFile(atPath: Tools.qemu10IO), "qemu 10 missing: run scripts/test")
        try await withDaemon { daemon in
            try await daemon.createVolume("big", "12G", chunkSize: "1M")
            let at = 9 * (1 << 30) + 512
            try await daemon.qemuIOOK(
                "big", ["write -P 0x77 \(at) 64k", "read -P 0x77 \(at) 64k"], binary: Tools.qemu10IO)
            let map10 = coalesce(try await daemon.qemuImgMap("big", binary: Tools.qemu10Img))
            // 1 MiB chunks have 16 KiB sub-blocks: [9G, 9G+80k) holds the data.
            let dataStart = 9 * (1 << 30)
            let dataEnd = dataStart + 80 * KiB
            #expect(dataRanges(map10) == [dataStart..<dataEnd], "\(map10)")
            #expect(map10.count == 3 && map10.first?.length == dataStart, "\(map10)")
            let map72 = coalesce(try await daemon.qemuImgMap("big"))
            #expect(map72 == map10, "qemu 7.2: \(map72)")
            let volume = try await daemon.volume("big")
            #expect(volume.allocatedBytes == UInt64(80 * KiB), "\(volume)")
        }
    }
}
