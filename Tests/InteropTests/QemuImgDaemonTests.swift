import CairnAPI
import Foundation
import InteropSupport
import Testing

/// qemu-img convert and compare through a real `cairn serve`: a sparse raw image in, raw and qcow2 out,
/// byte-exact, holes kept as holes, and compare noticing a single changed byte.
@Suite("qemu-img against cairn serve")
struct QemuImgDaemonTests {
    /// A 40 MiB sparse raw file: data at the start, an unaligned island, zeros that are allocated in the
    /// file (qemu-img must still treat them as zeros), a 3 MiB run across several 2 MiB convert buffers,
    /// and the last 64 KiB.
    static func makeSource(_ path: String) async throws {
        let create = try await runTool(Tools.qemuImg, ["create", "-f", "raw", path, "40M"])
        try #require(create.status == 0, "\(create)")
        let fill = try await runTool(
            Tools.qemuIO,
            [
                "-f", "raw", path,
                "-c", "write -P 0x11 0 1m",
                "-c", "write -P 0x12 \(5 * MiB + 1234) 777",
                "-c", "write -P 0 \(8 * MiB) 1m",
                "-c", "write -P 0x13 \(11 * MiB - 4096) 3m",
                "-c", "write -P 0x14 \(40 * MiB - 64 * KiB) 64k",
            ])
        try #require(fill.status == 0 && !fill.stdout.contains("failed"), "\(fill)")
    }

    @Test("convert a sparse raw image in, compare, convert out to raw and qcow2, compare again")
    func convertRoundTrip() async throws {
        let scratch = try ScratchDirectory("convert")
        defer { scratch.remove() }
        let source = scratch.file("source.raw")
        try await Self.makeSource(source)
        try await withDaemon { daemon in
            try await daemon.createVolume("img", "40M")
            // Dirty the volume first: convert -n must zero what the source does not have.
            try await daemon.qemuIOOK("img", ["write -P 0xee 0 16m", "write -P 0xef \(30 * MiB) 2m"])
            let into = try await runTool(
                Tools.qemuImg, ["convert", "-n", "-f", "raw", "-O", "raw", source, daemon.uri("img")], timeout: 120)
            try #require(into.status == 0, "\(into)")
            let compare = try await runTool(
                Tools.qemuImg, ["compare", "-f", "raw", "-F", "raw", source, daemon.uri("img")])
            #expect(compare.status == 0 && compare.stdout.contains("Images are identical"), "\(compare)")

            // Holes of the source became holes of the volume (convert zeroes with MAY_UNMAP): what stays
            // allocated is the source's data, at 4 KiB sub-block granularity.
            let map = try await daemon.qemuImgMap("img")
            let data = dataRanges(map)
            let expected: [Range<Int>] = [
                0..<MiB, (5 * MiB)..<(5 * MiB + 4096), (11 * MiB - 4096)..<(14 * MiB - 4096),
                (40 * MiB - 64 * KiB)..<(40 * MiB),
            ]
            #expect(data == expected, "map: \(map)")
            let allocated = try await daemon.volume("img").allocatedBytes
            #expect(allocated == UInt64(expected.reduce(0) { $0 + $1.count }), "allocated \(allocated)")

            for format in ["raw", "qcow2"] {
                let copy = scratch.file("copy.\(format)")
                let out = try await runTool(
                    Tools.qemuImg, ["convert", "-f", "raw", "-O", format, daemon.uri("img"), copy], timeout: 120)
                try #require(out.status == 0, "\(out)")
                let again = try await runTool(Tools.qemuImg, ["compare", "-f", "raw", "-F", format, source, copy])
                #expect(again.status == 0 && again.stdout.contains("Images are identical"), "\(format): \(again)")
                // The copy is sparse too: qemu-img saw the holes through BLOCK_STATUS.
                #expect(allocatedBytes(atPath: copy) < UInt64(8 * MiB), "\(format) copy is not sparse")
            }
            let raw = try Data(contentsOf: URL(fileURLWithPath: scratch.file("copy.raw")))
            let original = try Data(contentsOf: URL(fileURLWithPath: source))
            #expect(raw == original, "convert out is byte-exact")

            // Negative control: one byte changed at an odd offset inside a hole, then inside data.
            for offset in [20 * MiB + 4097, 12 * MiB + 333] {
                try await daemon.qemuIOOK("img", ["write -P 0x99 \(offset) 1"])
                let differ = try await runTool(
                    Tools.qemuImg, ["compare", "-f", "raw", "-F", "raw", source, daemon.uri("img")])
                #expect(differ.status == 1, "compare must report a difference: \(differ)")
                // qemu-img reports the first differing sector-aligned offset or the byte itself.
                let reported = differ.stdout.split(separator: "offset ").last.flatMap { Int($0.prefix { $0.isNumber }) }
                #expect(reported.map { $0 <= offset && offset - $0 < 512 } == true, "\(differ)")
                // Restore the byte so the next probe starts from an identical image.
                let restore = try await runTool(
                    Tools.qemuImg, ["convert", "-n", "-f", "raw", "-O", "raw", source, daemon.uri("img")], timeout: 120)
                try #require(restore.status == 0, "\(restore)")
            }
            try await daemon.expectHealthy()
        }
    }

    @Test("qemu-img info and a qcow2 image stored on a Cairn volume")
    func qcow2OnCairn() async throws {
        try await withDaemon { daemon in
            try await daemon.createVolume("q", "32M")
            // A qcow2 image written straight onto the NBD export, then used through two layers.
            let create = try await runTool(Tools.qemuImg, ["create", "-f", "qcow2", daemon.uri("q"), "24M"])
            try #require(create.status == 0, "\(create)")
            let io = try await runTool(
                Tools.qemuIO,
                [
                    "-f", "qcow2", daemon.uri("q"), "-c", "write -P 0x61 1m 3m", "-c", "read -P 0x61 1m 3m",
                    "-c", "read -P 0 0 1m",
                ])
            #expect(io.status == 0 && !io.stdout.contains("failed"), "\(io)")
            let check = try await runTool(Tools.qemuImg, ["check", "-f", "qcow2", daemon.uri("q")])
            #expect(check.status == 0 && check.stdout.contains("No errors"), "\(check)")
            let info = try await runTool(Tools.qemuImg, ["info", "--output=json", "-f", "raw", daemon.uri("q")])
            let object = try parseJSON(info.stdout) as? [String: Any]
            #expect(object?["virtual-size"] as? Int == 32 * MiB, "\(info)")
            try await daemon.expectHealthy()
        }
    }
}
