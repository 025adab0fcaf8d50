import Foundation
import InteropSupport
import Testing

/// Snapshots, clones, rollback, changed-block tracking and dedup through the real daemon and real clients.
@Suite("snapshots through cairn serve")
struct SnapshotDaemonTests {
    static func qemuIO(_ daemon: TestDaemon, _ export: String, readOnly: Bool = false, _ commands: [String])
        async throws -> ProcessResult
    {
        var arguments = ["-f", "raw"]
        if readOnly { arguments.append("-r") }
        arguments.append(daemon.uri(export))
        for command in commands { arguments += ["-c", command] }
        let result = try await runTool(Tools.qemuIO, arguments)
        #expect(
            result.status == 0 && !result.stdout.contains("verification failed") && !result.stderr.contains("failed"),
            "qemu-io \(export) \(commands): \(result)")
        return result
    }

    @Test("a snapshot is exported read-only as VOL@SNAP and never changes while the volume is written")
    func snapshotExport() async throws {
        try await withDaemon { daemon in
            try await daemon.cliOK(["volume", "create", "v", "64M"])
            _ = try await Self.qemuIO(daemon, "v", ["write -P 0x11 0 8m", "write -P 0x12 20m 1m"])
            // The answer to a create says how long writes were held back, which is part of the whole.
            let created = try await daemon.cliOK(["snapshot", "create", "v@before", "--json"])
            let creation = try #require(
                (try parseJSON(created.stdout) as? [String: Any])?["creation"] as? [String: Any], "\(created)")
            let paused = try #require(creation["writesPausedMicroseconds"] as? Int, "\(created)")
            let total = try #require(creation["totalMicroseconds"] as? Int, "\(created)")
            #expect(paused >= 0 && total > 0 && paused <= total, "\(created)")
            let shown = try await daemon.cliOK(["snapshot", "show", "v@before", "--json"])
            #expect(!shown.stdout.contains("creation"), "only a create reports its timing: \(shown)")
            _ = try await Self.qemuIO(daemon, "v", ["write -P 0x21 4k 4k", "write -P 0x22 1m 3m", "write -z 20m 512k"])
            _ = try await Self.qemuIO(
                daemon, "v@before", readOnly: true,
                ["read -P 0x11 0 8m", "read -P 0x12 20m 1m", "read -P 0 8m 12m"])
            _ = try await Self.qemuIO(daemon, "v", ["read -P 0x21 4k 4k", "read -P 0x22 1m 3m", "read -P 0 20m 512k"])
            // Writes to the snapshot export are refused.
            let write = try await runTool(Tools.qemuIO, ["-f", "raw", daemon.uri("v@before"), "-c", "write 0 4k"])
            #expect(write.status != 0 || write.stderr.contains("Operation not permitted") || write.stdout.contains("failed"), "\(write)")
            // nbdinfo sees it, read-only, with its own allocation map.
            let info = try await runTool(Tools.nbdinfo, ["--json", daemon.uri("v@before")])
            #expect(info.stdout.contains("\"is_read_only\": true"), "\(info)")
            let map = try await runTool(Tools.nbdinfo, ["--map", daemon.uri("v@before")])
            #expect(map.stdout.contains("8388608    0  data") || map.stdout.contains("0     8388608    0"), "\(map)")
            let list = try await runTool(Tools.nbdinfo, ["--list", daemon.uri("")])
            #expect(list.stdout.contains("v@before"), "\(list)")
            // The snapshot's content equals a qemu-img copy taken now, byte for byte, after more writes.
            let scratch = try ScratchDirectory("snap")
            defer { scratch.remove() }
            let copy = scratch.file("before.raw")
            let convert = try await runTool(Tools.qemuImg, ["convert", "-f", "raw", "-O", "raw", daemon.uri("v@before"), copy])
            #expect(convert.status == 0, "\(convert)")
            _ = try await Self.qemuIO(daemon, "v", ["write -P 0x33 0 64m"])
            let compare = try await runTool(Tools.qemuImg, ["compare", "-f", "raw", "-F", "raw", copy, daemon.uri("v@before")])
            #expect(compare.status == 0, "\(compare)")
            try await daemon.cliOK(["pool", "check"])
        }
    }

    @Test("snapshot diff and qemu:dirty-bitmap report exactly the written extents")
    func changedBlockTracking() async throws {
        try await withDaemon { daemon in
            try await daemon.cliOK(["volume", "create", "v", "32M"])
            _ = try await Self.qemuIO(daemon, "v", ["write -P 1 0 32m"])
            try await daemon.cliOK(["snapshot", "create", "v@a"])
            _ = try await Self.qemuIO(daemon, "v", ["write -P 2 1m 64k", "write -P 3 10m 4k"])
            try await daemon.cliOK(["snapshot", "create", "v@b"])
            _ = try await Self.qemuIO(daemon, "v", ["write -P 4 20m 8k"])
            let diff = try await daemon.cliOK(["snapshot", "diff", "v@a", "v@b", "--json"])
            let json = try JSONSerialization.jsonObject(with: Data(diff.stdout.utf8)) as? [String: Any]
            let extents = (json?["extents"] as? [[String: Any]] ?? []).map { [$0["offset"] as? Int, $0["length"] as? Int] }
            #expect(extents == [[1 << 20, 65536], [10 << 20, 4096]], "\(diff.stdout)")
            #expect(json?["changedBytes"] as? Int == 69632)
            let live = try await daemon.cliOK(["snapshot", "diff", "v@b", "--json"])
            #expect(live.stdout.contains("20971520"), "\(live.stdout)")
            // The same through NBD: what a backup tool reads for an incremental backup.
            let map = try await runTool(Tools.nbdinfo, ["--map=qemu:dirty-bitmap:a", daemon.uri("v@b")])
            let dirty = map.stdout.split(separator: "\n").filter { $0.contains("dirty") }.map {
                $0.split(separator: " ", omittingEmptySubsequences: true).prefix(2).map(String.init)
            }
            #expect(dirty == [["1048576", "65536"], ["10485760", "4096"]], "\(map)")
            // qemu-img reads the same bitmap through its own client.
            let image = "json:{\"driver\":\"raw\",\"file\":{\"driver\":\"nbd\",\"server\":{\"type\":\"inet\",\"host\":\"127.0.0.1\",\"port\":\"\(daemon.nbdPort)\"},\"export\":\"v\",\"x-dirty-bitmap\":\"qemu:dirty-bitmap:b\"}}"
            let qmap = try await runTool(Tools.qemuImg, ["map", "--output=json", image])
            #expect(qmap.status == 0, "\(qmap)")
            // x-dirty-bitmap turns dirty extents into "data": false holes in qemu's map view.
            #expect(qmap.stdout.contains("\"start\": 20971520"), "\(qmap.stdout)")
        }
    }

    @Test("clones are writable, independent, and keep their snapshot alive")
    func clones() async throws {
        try await withDaemon { daemon in
            try await daemon.cliOK(["volume", "create", "base", "16M"])
            _ = try await Self.qemuIO(daemon, "base", ["write -P 0x41 0 16m"])
            try await daemon.cliOK(["snapshot", "create", "base@gold"])
            try await daemon.cliOK(["volume", "clone", "base@gold", "c1"])
            try await daemon.cliOK(["volume", "clone", "base@gold", "c2"])
            _ = try await Self.qemuIO(daemon, "c1", ["write -P 0x51 0 1m", "read -P 0x41 1m 15m"])
            _ = try await Self.qemuIO(daemon, "c2", ["read -P 0x41 0 16m", "write -P 0x52 8m 512"])
            try await daemon.cliOK(["snapshot", "create", "c1@s"])
            try await daemon.cliOK(["volume", "clone", "c1@s", "c1c"])
            _ = try await Self.qemuIO(daemon, "c1c", ["read -P 0x51 0 1m", "read -P 0x41 1m 15m"])
            _ = try await Self.qemuIO(daemon, "base", ["read -P 0x41 0 16m"])
            let refused = try await daemon.cli(["snapshot", "delete", "base@gold"])
            #expect(refused.status == 4 && refused.stderr.contains("c1"), "\(refused)")
            let show = try await daemon.cliOK(["volume", "show", "c1c", "--json"])
            #expect(show.stdout.contains("\"origin\" : \"c1@s\""), "\(show.stdout)")
            try await daemon.cliOK(["volume", "delete", "c1c"])
            try await daemon.cliOK(["snapshot", "delete", "c1@s", "--wait"])
            try await daemon.cliOK(["pool", "check"])
        }
    }

    @Test("rollback: refused while exported or when newer snapshots exist, unless --force")
    func rollback() async throws {
        try await withDaemon { daemon in
            try await daemon.cliOK(["volume", "create", "v", "8M"])
            _ = try await Self.qemuIO(daemon, "v", ["write -P 1 0 8m"])
            try await daemon.cliOK(["snapshot", "create", "v@one"])
            _ = try await Self.qemuIO(daemon, "v", ["write -P 2 0 4m"])
            try await daemon.cliOK(["snapshot", "create", "v@two"])
            _ = try await Self.qemuIO(daemon, "v", ["write -P 3 0 1m"])
            let newer = try await daemon.cli(["snapshot", "rollback", "v@one"])
            #expect(newer.status == 4 && newer.stderr.contains("two"), "\(newer)")
            try await daemon.cliOK(["snapshot", "rollback", "v@two"])
            _ = try await Self.qemuIO(daemon, "v", ["read -P 2 0 4m", "read -P 1 4m 4m"])
            try await daemon.cliOK(["snapshot", "rollback", "v@one", "--force"])
            _ = try await Self.qemuIO(daemon, "v", ["read -P 1 0 8m"])
            let list = try await daemon.cliOK(["snapshot", "list", "v", "--json"])
            #expect(!list.stdout.contains("\"two\""), "\(list.stdout)")
            try await daemon.cliOK(["pool", "check"])
        }
    }

    @Test("dedup shares identical data across volumes and snapshots; a write unshares it")
    func dedup() async throws {
        try await withDaemon { daemon in
            let scratch = try ScratchDirectory("dedup")
            defer { scratch.remove() }
            let image = scratch.file("data.raw")
            try Data((0..<(8 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 2654435761 >> 13) }).write(to: URL(fileURLWithPath: image))
            for name in ["a", "b"] {
                try await daemon.cliOK(["volume", "create", name, "16M"])
                let convert = try await runTool(Tools.qemuImg, ["convert", "-n", "-f", "raw", "-O", "raw", image, daemon.uri(name)])
                #expect(convert.status == 0, "\(convert)")
            }
            let before = try await daemon.cliOK(["pool", "status", "--json"])
            let job = try await daemon.cliOK(["dedup", "--wait", "--json"])
            #expect(job.stdout.contains("\"state\" : \"succeeded\""), "\(job.stdout)")
            // A finished job has a rate (it did work) and no ETA.
            let finished = try #require(try parseJSON(job.stdout) as? [String: Any], "\(job.stdout)")
            #expect((finished["rate"] as? Double ?? 0) > 0 && finished["etaSeconds"] == nil, "\(job.stdout)")
            let after = try await daemon.cliOK(["pool", "status", "--json"])
            func used(_ text: String) -> Int {
                ((try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any])?["usedBytes"] as? Int ?? -1
            }
            #expect(used(after.stdout) <= used(before.stdout) / 2 + 65536, "\(before.stdout)\n\(after.stdout)")
            _ = try await Self.qemuIO(daemon, "a", ["write -P 0x77 4k 4k"])
            for name in ["a", "b"] {
                let compare = try await runTool(
                    Tools.qemuImg, ["compare", "-f", "raw", "-F", "raw", image, daemon.uri(name)])
                #expect(name == "a" ? compare.status == 1 : compare.status == 0, "\(name): \(compare)")
            }
            try await daemon.cliOK(["pool", "check"])
        }
    }
}
