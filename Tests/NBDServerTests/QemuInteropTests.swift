import Foundation
import InteropSupport
import NBDProtocol
import NBDServer
import Testing

/// qemu-io and qemu-img (Debian 12, qemu 7.2): structured replies, base:allocation, GO with BLOCK_SIZE.
@Suite("qemu 7.2 clients")
struct QemuInteropTests {
    @Test("qemu-io writes a pattern and reads it back; read -P fails on mismatch")
    func writeReadPattern() async throws {
        let export = MemoryExport(name: "disk", size: 64 << 20)
        try await withServer([export]) { server, _ in
            let result = try await runProcess(
                Tools.qemuIO,
                [
                    "-f", "raw", server.uri("disk"),
                    "-c", "write -P 0xab 0 64k", "-c", "write -P 0xcd 1m 3m", "-c", "read -P 0xab 0 64k",
                    "-c", "read -P 0xcd 1m 3m", "-c", "read -P 0 64k 960k",
                ]
            )
            #expect(result.status == 0, "\(result)")
            #expect(!result.stdout.contains("Pattern verification failed"), "\(result)")
            #expect(result.stdout.contains("read 3145728/3145728 bytes"), "\(result)")
            #expect(export.contents(offset: 0, length: 2) == [0xab, 0xab])
            #expect(export.contents(offset: 1 << 20, length: 1) == [0xcd])
            // qemu-io puts FUA on every write (ORACLES.md); FUA was advertised, so it must arrive.
            #expect(export.counters.fuaWrites == 2)

            // The check really checks: a wrong pattern is reported.
            let mismatch = try await runProcess(
                Tools.qemuIO,
                ["-f", "raw", server.uri("disk"), "-c", "read -P 0x11 0 4k"]
            )
            #expect(mismatch.stdout.contains("Pattern verification failed"), "\(mismatch)")
        }
    }

    @Test("write -z, write -z -u and discard reach the export as WRITE_ZEROES and TRIM; map shows holes")
    func zeroesTrimAndMap() async throws {
        let export = MemoryExport(name: "disk", size: 16 << 20)
        try await withServer([export]) { server, _ in
            let result = try await runProcess(
                Tools.qemuIO,
                [
                    "-f", "raw", server.uri("disk"),
                    "-c", "write -P 0x5a 0 4m",
                    "-c", "write -z 0 1m",  // NO_HOLE: stays allocated
                    "-c", "write -z -u 1m 1m",  // may punch
                    "-c", "discard 2m 1m",
                    "-c", "read -P 0 0 3m", "-c", "read -P 0x5a 3m 1m",
                ]
            )
            #expect(result.status == 0, "\(result)")
            #expect(!result.stdout.contains("Pattern verification failed"), "\(result)")
            let zeroes = export.counters.zeroes
            #expect(zeroes.count == 2)
            #expect(zeroes.first?.punch == false, "write -z sends NO_HOLE")
            #expect(zeroes.last?.punch == true, "write -z -u lets the server punch")
            #expect(export.counters.trims == 1)
            // 0-1m zeroed but allocated, 1m-3m punched, 3m-4m data, rest never written. qemu-img map
            // asks BLOCK_STATUS on base:allocation (qemu-io's own `map` only reports backing-chain state).
            let map = try await runProcess(Tools.qemuImg, ["map", "-f", "raw", "--output=json", server.uri("disk")])
            #expect(map.status == 0, "\(map)")
            let extents = try JSONDecoder().decode([MapExtent].self, from: Data(map.stdout.utf8))
            let mib = 1 << 20
            let expected: [[Int]] = [[0, mib], [mib, 2 * mib], [3 * mib, mib], [4 * mib, 12 * mib]]
            let layout: [[Int]] = extents.map { [$0.start, $0.length] }
            #expect(layout == expected, "\(map)")
            #expect(extents.map(\.data) == [true, false, true, false], "\(map)")
            #expect(extents[1].zero && extents[3].zero, "\(map)")
        }
    }

    struct MapExtent: Decodable {
        var start: Int
        var length: Int
        var data: Bool
        var zero: Bool
    }

    @Test("qemu-img convert into the export and back out; qemu-img compare agrees")
    func convertAndCompare() async throws {
        let export = MemoryExport(name: "disk", size: 32 << 20)
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("nbd-convert-\(UUID())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let source = directory.appendingPathComponent("source.raw").path
        let copy = directory.appendingPathComponent("copy.raw").path
        // A sparse source: data at 0, 5 MiB and the last 64 KiB; holes elsewhere.
        let create = try await runProcess(Tools.qemuImg, ["create", "-f", "raw", source, "32M"])
        #expect(create.status == 0, "\(create)")
        let fill = try await runProcess(
            Tools.qemuIO,
            [
                "-f", "raw", source, "-c", "write -P 0x11 0 1m", "-c", "write -P 0x22 5m 2m", "-c",
                "write -P 0x33 32704k 64k",
            ]
        )
        #expect(fill.status == 0, "\(fill)")
        try await withServer([export]) { server, _ in
            let into = try await runProcess(
                Tools.qemuImg,
                ["convert", "-n", "-f", "raw", "-O", "raw", source, server.uri("disk")]
            )
            #expect(into.status == 0, "\(into)")
            let compare = try await runProcess(
                Tools.qemuImg,
                ["compare", "-f", "raw", "-F", "raw", source, server.uri("disk")]
            )
            #expect(compare.status == 0, "\(compare)")
            #expect(compare.stdout.contains("Images are identical"), "\(compare)")

            let out = try await runProcess(
                Tools.qemuImg,
                ["convert", "-f", "raw", "-O", "raw", server.uri("disk"), copy]
            )
            #expect(out.status == 0, "\(out)")
            let again = try await runProcess(Tools.qemuImg, ["compare", "-f", "raw", "-F", "raw", source, copy])
            #expect(again.status == 0, "\(again)")

            // compare must notice a difference, or it proves nothing.
            let change = try await runProcess(
                Tools.qemuIO,
                ["-f", "raw", server.uri("disk"), "-c", "write -P 0x44 10m 4k"]
            )
            #expect(change.status == 0, "\(change)")
            let differ = try await runProcess(
                Tools.qemuImg,
                ["compare", "-f", "raw", "-F", "raw", source, server.uri("disk")]
            )
            #expect(differ.status == 1, "\(differ)")
        }
    }

    @Test("a read-only export is opened read-only and never written")
    func readOnlyExport() async throws {
        let export = MemoryExport(name: "ro", size: 1 << 20, capabilities: [.readOnly, .blockStatus])
        try await withServer([export]) { server, _ in
            let result = try await runProcess(
                Tools.qemuIO,
                ["-f", "raw", "-r", server.uri("ro"), "-c", "read -P 0 0 64k"]
            )
            #expect(result.status == 0, "\(result)")
            let write = try await runProcess(Tools.qemuIO, ["-f", "raw", server.uri("ro"), "-c", "write 0 4k"])
            #expect(
                write.status != 0 || write.stderr.contains("read-only") || write.stdout.contains("read-only"),
                "\(write)"
            )
            #expect(export.counters.writes == 0)
        }
    }
}
