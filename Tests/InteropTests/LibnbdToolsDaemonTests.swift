import CairnAPI
import Foundation
import InteropSupport
import Testing

/// nbdinfo and nbdcopy (libnbd 1.14) against a real `cairn serve`.
@Suite("nbdinfo and nbdcopy against cairn serve")
struct LibnbdToolsDaemonTests {
    @Test("nbdinfo --json: size, capabilities, block sizes and base:allocation")
    func nbdinfoJSON() async throws {
        try await withDaemon { daemon in
            try await daemon.createVolume("info", "96M")
            let result = try await runTool(Tools.nbdinfo, ["--json", daemon.uri("info")])
            try #require(result.status == 0, "\(result)")
            let object = try #require(try parseJSON(result.stdout) as? [String: Any], "\(result)")
            #expect(object["protocol"] as? String == "newstyle-fixed", "\(result)")
            let exports = try #require(object["exports"] as? [[String: Any]], "\(result)")
            try #require(exports.count == 1, "\(result)")
            let export = exports[0]
            #expect(export["export-name"] as? String == "info")
            #expect(export["export-size"] as? Int == 96 * MiB, "\(export)")
            #expect(export["is_read_only"] as? Bool == false, "\(export)")
            // Everything the daemon advertises (VolumeExport.capabilities) must reach the client.
            for flag in [
                "can_flush", "can_fua", "can_trim", "can_zero", "can_fast_zero", "can_cache", "can_multi_conn",
            ] {
                #expect(export[flag] as? Bool == true, "\(flag): \(export)")
            }
            #expect(export["can_df"] as? Bool == true, "structured replies give DF: \(export)")
            #expect(export["block_size_minimum"] as? Int == 512, "\(export)")
            #expect(export["block_size_preferred"] as? Int == 4096, "\(export)")
            #expect(export["block_size_maximum"] as? Int == 32 * MiB, "\(export)")
            #expect((export["contexts"] as? [String])?.contains("base:allocation") == true, "\(export)")
            #expect((export["description"] as? String)?.contains("cairn") == true, "\(export)")
        }
    }

    @Test("nbdinfo --list shows every volume, including ones created and deleted while running")
    func nbdinfoList() async throws {
        try await withDaemon { daemon in
            func listed() async throws -> [String: Int] {
                let result = try await runTool(Tools.nbdinfo, ["--list", "--json", daemon.uri("")])
                guard result.status == 0, let object = try parseJSON(result.stdout) as? [String: Any],
                    let exports = object["exports"] as? [[String: Any]]
                else { throw TestDaemonError("nbdinfo --list: \(result)") }
                var names: [String: Int] = [:]
                for export in exports {
                    if let name = export["export-name"] as? String { names[name] = export["export-size"] as? Int ?? -1 }
                }
                return names
            }
            #expect(try await listed().isEmpty)
            try await daemon.createVolume("alpha", "1M")
            try await daemon.createVolume("beta", "2M", chunkSize: "1M")
            try await daemon.createVolume("gamma.3_x-y", "3M")
            // No restart in between: an export exists as soon as its volume does.
            #expect(try await listed() == ["alpha": MiB, "beta": 2 * MiB, "gamma.3_x-y": 3 * MiB])
            try await daemon.cliOK(["volume", "delete", "beta"])
            try await daemon.cliOK(["volume", "rename", "alpha", "delta"])
            try await daemon.cliOK(["volume", "resize", "gamma.3_x-y", "5M"])
            #expect(try await listed() == ["delta": MiB, "gamma.3_x-y": 5 * MiB])
            // The text form lists names too.
            let text = try await runTool(Tools.nbdinfo, ["--list", daemon.uri("")])
            #expect(text.status == 0 && text.stdout.contains("delta") && !text.stdout.contains("beta"), "\(text)")
            // A deleted volume can no longer be opened.
            let gone = try await runTool(Tools.nbdinfo, [daemon.uri("beta")])
            #expect(gone.status != 0, "\(gone)")
        }
    }

    @Test("nbdinfo --map matches what was written, at sub-block granularity")
    func nbdinfoMap() async throws {
        try await withDaemon { daemon in
            try await daemon.createVolume("m", "8M", chunkSize: "256K")
            try await daemon.qemuIOOK(
                "m",
                [
                    "write -P 1 0 4k", "write -P 2 12k 512", "write -P 3 \(256 * KiB - 4096) 8k", "write -z 1m 64k",
                    "write -P 4 \(8 * MiB - 4096) 4k",
                ])
            let result = try await runTool(Tools.nbdinfo, ["--map", "--json", daemon.uri("m")])
            try #require(result.status == 0, "\(result)")
            let rows = try #require(try parseJSON(result.stdout) as? [[String: Any]], "\(result)")
            let extents = rows.map {
                ($0["offset"] as? Int ?? -1, $0["length"] as? Int ?? -1, $0["type"] as? Int ?? -1)
            }
            let expected: [(Int, Int, Int)] = [
                (0, 4096, 0), (4096, 8192, 3), (12288, 4096, 0), (16384, 256 * KiB - 4096 - 16384, 3),
                (256 * KiB - 4096, 8192, 0), (256 * KiB + 4096, MiB - 256 * KiB - 4096, 3), (MiB, 64 * KiB, 0),
                (MiB + 64 * KiB, 7 * MiB - 64 * KiB - 4096, 3), (8 * MiB - 4096, 4096, 0),
            ]
            #expect(extents.map { [$0.0, $0.1, $0.2] } == expected.map { [$0.0, $0.1, $0.2] }, "\(result.stdout)")
            // --map --totals is consistent with the volume's allocated bytes.
            let allocated = try await daemon.volume("m").allocatedBytes
            #expect(allocated == UInt64(4096 + 4096 + 8192 + 64 * KiB + 4096))
        }
    }

    /// The daemon answers at most 2048 extents per BLOCK_STATUS (Pool.maximumAllocationExtents); clients
    /// must get the rest by asking again, and nothing may be lost or merged wrongly at the cut.
    @Test("more extents than one BLOCK_STATUS reply carries: nbdinfo still sees all of them")
    func manyExtents() async throws {
        let script = """
            import sys, nbd
            h = nbd.NBD()
            h.connect_uri(sys.argv[1])
            for i in range(0, 24 << 20, 8192):
                while h.aio_in_flight() >= 32:
                    h.poll(-1)
                h.aio_pwrite(nbd.Buffer.from_bytearray(bytearray([1 + (i >> 13) % 250]) * 4096), i)
            while h.aio_in_flight() > 0:
                h.poll(-1)
            h.flush()
            h.shutdown()
            """
        try await withDaemon { daemon in
            try await daemon.createVolume("many", "32M")
            let fill = try await runPython(script, [daemon.uri("many")], timeout: 120)
            try #require(fill.status == 0, "\(fill)")
            // 3072 data sub-blocks alternating with holes, then one 8 MiB hole: 6144 extents.
            let map = try await runTool(Tools.nbdinfo, ["--map", "--json", daemon.uri("many")])
            try #require(map.status == 0, "\(map)")
            let rows = try #require(try parseJSON(map.stdout) as? [[String: Any]])
            var position = 0
            var problems: [String] = []
            for (index, row) in rows.enumerated() {
                let offset = row["offset"] as? Int ?? -1
                let length = row["length"] as? Int ?? -1
                let type = row["type"] as? Int ?? -1
                if offset != position { problems.append("row \(index) starts at \(offset), expected \(position)") }
                let expectedLength = index == rows.count - 1 ? 8 * MiB + 4096 : 4096
                let expectedType = index % 2 == 0 ? 0 : 3
                if length != expectedLength || type != expectedType {
                    problems.append("row \(index): \(offset)+\(length) type \(type)")
                }
                position = offset + length
                if problems.count > 5 { break }
            }
            #expect(problems.isEmpty && rows.count == 6144 && position == 32 * MiB, "\(rows.count) rows: \(problems)")
            // qemu-img's view of the same layout (one REQ_ONE request per extent) is checked side by side
            // with nbdkit in ReferenceServerDaemonTests.
            // And the contents: every data sub-block has its own pattern.
            let check = try await daemon.qemuIO(
                "many",
                [
                    "read -P 1 0 4k", "read -P 0 4k 4k", "read -P 1 \(250 * 8192) 4k", "read -P 250 \(249 * 8192) 4k",
                    "read -P \(1 + 3071 % 250) \(3071 * 8192) 4k", "read -P 0 \(24 * MiB - 4096) \(8 * MiB + 4096)",
                ])
            #expect(check.status == 0 && !check.qemuIOPatternFailed, "\(check)")
        }
    }

    @Test("nbdcopy into and out of a volume: byte-exact, holes zeroed over old data")
    func nbdcopyRoundTrip() async throws {
        let scratch = try ScratchDirectory("nbdcopy")
        defer { scratch.remove() }
        let source = scratch.file("source.raw")
        try await QemuImgDaemonTests.makeSource(source)
        try await withDaemon { daemon in
            try await daemon.createVolume("c", "40M")
            // Old data everywhere: nbdcopy must zero the source's holes (WRITE_ZEROES), not skip them.
            try await daemon.qemuIOOK("c", ["write -P 0xdd 0 32m", "write -P 0xde 32m 8m"])
            let into = try await runTool(Tools.nbdcopy, [source, daemon.uri("c")], timeout: 120)
            try #require(into.status == 0, "\(into)")
            let back = scratch.file("back.raw")
            let out = try await runTool(Tools.nbdcopy, [daemon.uri("c"), back], timeout: 120)
            try #require(out.status == 0, "\(out)")
            let original = try Data(contentsOf: URL(fileURLWithPath: source))
            let copy = try Data(contentsOf: URL(fileURLWithPath: back))
            #expect(copy.count == original.count)
            if let index = zip(copy, original).enumerated().first(where: { $0.element.0 != $0.element.1 })?.offset {
                Issue.record("nbdcopy round trip differs first at byte \(index)")
            }
            // The holes were punched, so old data does not hold space: at most the source's data plus
            // the zeroed-but-allocated megabyte (nbdcopy may write that as data or as zeros).
            let allocated = try await daemon.volume("c").allocatedBytes
            #expect(allocated <= UInt64(1 * MiB + 4096 + 3 * MiB + 64 * KiB + 1 * MiB), "allocated \(allocated)")
            #expect(allocated >= UInt64(1 * MiB + 3 * MiB + 64 * KiB), "allocated \(allocated)")
            // Volume to volume over NBD on both sides (two connections each way).
            try await daemon.createVolume("c2", "40M")
            let across = try await runTool(
                Tools.nbdcopy, ["--connections=2", daemon.uri("c"), daemon.uri("c2")], timeout: 120)
            try #require(across.status == 0, "\(across)")
            let compare = try await runTool(
                Tools.qemuImg, ["compare", "-f", "raw", "-F", "raw", source, daemon.uri("c2")])
            #expect(compare.status == 0, "\(compare)")
            try await daemon.expectHealthy()
        }
    }
}
