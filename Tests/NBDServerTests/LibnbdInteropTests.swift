import Foundation
import InteropSupport
import NBDProtocol
import NBDServer
import Testing

/// nbdinfo and nbdcopy (libnbd 1.14): INFO with BLOCK_SIZE/NAME/DESCRIPTION, LIST, LIST_META_CONTEXT,
/// BLOCK_STATUS over the whole export, two-connection copies with WRITE_ZEROES for holes.
@Suite("libnbd tools")
struct LibnbdInteropTests {
    static func disk() -> MemoryExport {
        MemoryExport(
            name: "disk",
            size: 8 << 20,
            description: "test disk",
            blockSizes: NBDBlockSizeConstraints(minimum: 512, preferred: 4096, maximumPayload: 4 << 20)
        )
    }

    @Test("nbdinfo --json reports size, flags, block sizes and base:allocation")
    func nbdinfoJSON() async throws {
        try await withServer([Self.disk()]) { server, _ in
            let result = try await runProcess(Tools.nbdinfo, ["--json", server.uri("disk")])
            #expect(result.status == 0, "\(result)")
            let json = try #require(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any])
            #expect(json["protocol"] as? String == "newstyle-fixed", "\(result)")
            let export = try #require((json["exports"] as? [[String: Any]])?.first, "\(result)")
            #expect(export["export-size"] as? Int == 8 << 20, "\(result)")
            #expect(export["description"] as? String == "test disk", "\(result)")
            #expect(export["is_read_only"] as? Bool == false, "\(result)")
            for flag in [
                "can_flush", "can_fua", "can_trim", "can_zero", "can_fast_zero", "can_cache", "can_df",
                "can_multi_conn",
            ] {
                #expect(export[flag] as? Bool == true, "\(flag): \(result)")
            }
            #expect(export["is_rotational"] as? Bool == false, "\(result)")
            #expect(export["block_size_minimum"] as? Int == 512, "\(result)")
            #expect(export["block_size_preferred"] as? Int == 4096, "\(result)")
            #expect(export["block_size_maximum"] as? Int == 4 << 20, "\(result)")
            #expect((export["contexts"] as? [String]) == ["base:allocation"], "\(result)")
        }
    }

    @Test("nbdinfo --list lists every export with its description")
    func nbdinfoList() async throws {
        let other = MemoryExport(name: "other", size: 1 << 20, capabilities: [.readOnly])
        try await withServer([Self.disk(), other]) { server, _ in
            let result = try await runProcess(Tools.nbdinfo, ["--list", "--json", "nbd://127.0.0.1:\(server.port)"])
            #expect(result.status == 0, "\(result)")
            let json = try #require(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any])
            let exports = try #require(json["exports"] as? [[String: Any]], "\(result)")
            #expect(exports.compactMap { $0["export-name"] as? String }.sorted() == ["disk", "other"], "\(result)")
            let other = exports.first { $0["export-name"] as? String == "other" }
            #expect(other?["is_read_only"] as? Bool == true, "\(result)")
        }
    }

    @Test("nbdinfo --map shows data and holes from one BLOCK_STATUS")
    func nbdinfoMap() async throws {
        let export = Self.disk()
        try await withServer([export]) { server, _ in
            let write = try await runProcess(Tools.qemuIO, ["-f", "raw", server.uri("disk"), "-c", "write -P 1 1m 1m"])
            #expect(write.status == 0, "\(write)")
            let result = try await runProcess(Tools.nbdinfo, ["--map", server.uri("disk")])
            #expect(result.status == 0, "\(result)")
            let lines = result.stdout.split(separator: "\n").map {
                $0.split(separator: " ", omittingEmptySubsequences: true)
            }
            let summary = lines.map { "\($0[0]) \($0[1]) \($0[2])" }
            #expect(summary == ["0 1048576 3", "1048576 1048576 0", "2097152 6291456 3"], "\(result)")
        }
    }

    @Test("nbdcopy copies a file in and the export back out")
    func nbdcopyInAndOut() async throws {
        let export = Self.disk()
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("nbdcopy-\(UUID())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let source = directory.appendingPathComponent("in.raw").path
        let copy = directory.appendingPathComponent("out.raw").path
        var seed = UInt64.random(in: 1...UInt64.max)
        var bytes = [UInt8](repeating: 0, count: 8 << 20)
        // Random data in the first 3 MiB, zeroes (holes for nbdcopy) after.
        for index in 0..<(3 << 20) {
            seed = seed &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            bytes[index] = UInt8(truncatingIfNeeded: seed >> 33)
        }
        try Data(bytes).write(to: URL(fileURLWithPath: source))
        try await withServer([export]) { server, _ in
            // The timeouts catch a hang; a full suite on two cores has stretched a copy past a minute.
            let into = try await runProcess(Tools.nbdcopy, [source, server.uri("disk")], timeout: 300)
            #expect(into.status == 0, "\(into)")
            #expect(export.contents(offset: 0, length: 3 << 20) == Array(bytes[0..<(3 << 20)]))
            let out = try await runProcess(Tools.nbdcopy, [server.uri("disk"), copy], timeout: 300)
            #expect(out.status == 0, "\(out)")
            #expect(FileManager.default.contents(atPath: copy) == Data(bytes))
        }
    }
}
