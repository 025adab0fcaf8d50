import CairnAPI
import Foundation
import Glibc
import InteropSupport
import Testing

/// The `cairn` CLI against a real daemon: every command with good and bad input, the documented exit
/// codes (0 ok, 1 failure, 3 not found, 4 conflict, 5 no space, 6 unhealthy, 64 usage, 69 unreachable),
/// --json output, human tables, and that a refused command changes nothing.
@Suite("cairn CLI against cairn serve")
struct CLIDaemonTests {
    static let invalidNames: [String] = [
        "a/b", "a@b", "..", ".", ".hidden", "_x", "a b", "a\u{1}b", "a\nb", "tab\there", "é", "a%2Fb", "a?b", "a#b",
        "a\\b", "a:b", "-x", String(repeating: "n", count: 200), String(repeating: "n", count: 129),
    ]

    @Test("volume create refuses bad sizes and bad names with exit 64, and creates nothing")
    func createRefusesBadInput() async throws {
        try await withDaemon { daemon in
            for size in [
                "10X", "0", "1000", "511", "1.3K", "", "1P", "300T", "18446744073709551616", "0x100", "1e6", "G",
            ] {
                let result = try await daemon.cli(["volume", "create", "v", size])
                #expect(result.status == 64, "size '\(size)': \(result)")
                #expect(!result.stderr.isEmpty, "size '\(size)' explains itself")
            }
            // "-1" looks like an option to the argument parser; after "--" it is a size.
            let dashOne = try await daemon.cli(["volume", "create", "v", "-1"])
            #expect(dashOne.status == 64, "\(dashOne)")
            let sizeDashOne = try await daemon.cli(["volume", "create"], positionals: ["v", "-1"])
            #expect(sizeDashOne.status == 64, "\(sizeDashOne)")
            #expect(sizeDashOne.stderr.contains("-1"), "the message names the bad size: \(sizeDashOne)")
            for name in Self.invalidNames {
                let result = try await daemon.cli(["volume", "create"], positionals: [name, "1M"])
                #expect(result.status == 64, "name \(name.debugDescription): \(result)")
                // Control characters are escaped in the message, never echoed raw.
                #expect(!result.stderr.contains("\u{1}"), "\(result)")
            }
            for chunk in ["3K", "2K", "8M", "100000", "4G", "0"] {
                let result = try await daemon.cli(["volume", "create", "v", "1M", "--chunk-size", chunk])
                #expect(result.status == 64, "chunk size \(chunk): \(result)")
            }
            #expect(try await daemon.volumes().isEmpty, "nothing was created")
            #expect(try await daemon.poolStatus().volumeCount == 0)

            // The limits themselves are accepted.
            let longest = String(repeating: "n", count: 128)
            try await daemon.createVolume(longest, "512")
            try await daemon.createVolume("a", "1.5K")
            try await daemon.createVolume("0-x_y.z", "256T")
            try await daemon.createVolume("c4k", "1M", chunkSize: "4K")
            try await daemon.createVolume("c4m", "16M", chunkSize: "4MiB")
            let volumes = try await daemon.volumes()
            #expect(volumes.map(\.name) == ["0-x_y.z", "a", "c4k", "c4m", longest], "\(volumes)")
            #expect(volumes.first { $0.name == "a" }?.size == 1536)
            #expect(volumes.first { $0.name == "0-x_y.z" }?.size == 256 << 40)
            #expect(volumes.first { $0.name == "c4m" }?.chunkSize == 4 << 20)
            #expect(volumes.first { $0.name == "c4k" }?.chunkSize == 4096)
            // Each is usable over NBD right away, including the 512-byte one.
            try await daemon.qemuIOOK(longest, ["write -P 9 0 512", "read -P 9 0 512"])
            try await daemon.qemuIOOK("c4k", ["write -P 8 1000 5000", "read -P 8 1000 5000"])
        }
    }

    @Test("duplicate create, unknown volumes and conflicting renames get exit 4 and 3")
    func conflictsAndNotFound() async throws {
        try await withDaemon { daemon in
            try await daemon.createVolume("one", "1M")
            try await daemon.createVolume("two", "2M")
            let duplicate = try await daemon.cli(["volume", "create", "one", "5M"])
            #expect(duplicate.status == 4 && duplicate.stderr.contains("already exists"), "\(duplicate)")
            #expect(try await daemon.volume("one").size == UInt64(MiB), "the existing volume is untouched")

            for arguments in [
                ["volume", "show", "nope"], ["volume", "delete", "nope"], ["volume", "resize", "nope", "1M"],
                ["volume", "rename", "nope", "other"], ["volume", "delete", "nope", "--force"],
            ] {
                let result = try await daemon.cli(arguments)
                #expect(result.status == 3, "\(arguments): \(result)")
                #expect(result.stderr.contains("nope"), "the message names the volume: \(result)")
            }
            let taken = try await daemon.cli(["volume", "rename", "one", "two"])
            #expect(taken.status == 4, "\(taken)")
            let badNew = try await daemon.cli(["volume", "rename", "one", "bad/name"])
            #expect(badNew.status == 64, "\(badNew)")
            let same = try await daemon.cli(["volume", "rename", "one", "one", "--json"])
            #expect(same.status == 0, "renaming to the same name is a no-op: \(same)")
            #expect(Set(try await daemon.volumes().map(\.name)) == ["one", "two"])

            // Names that are not volume names never reach another volume through the URL path.
            for name in ["one?force=true", "one#x", "x/../one", "../volumes/one", "one/", "%6Fne"] {
                let show = try await daemon.cli(["volume", "show"], positionals: [name])
                #expect(show.status == 3 || show.status == 64, "show \(name.debugDescription): \(show)")
            }
        }
    }

    @Test("a name carrying a query string cannot force-delete or resize an attached volume")
    func namesAreNotURLs() async throws {
        try await withDaemon { daemon in
            try await daemon.createVolume("held", "4M")
            try await daemon.qemuIOOK("held", ["write -P 0x41 0 1m"])
            let holder = try HeldConnection(uri: daemon.uri("held"))
            defer { holder.close() }
            try await holder.waitUntilReady()
            #expect(try await daemon.volume("held").attachments == 1)
            let plain = try await daemon.cli(["volume", "delete", "held"])
            #expect(plain.status == 4, "\(plain)")
            // 'held?force=true' is not a volume name; it must not be read as `delete held --force`.
            let sneaky = try await daemon.cli(["volume", "delete", "held?force=true"])
            #expect(sneaky.status != 0, "\(sneaky)")
            let still = try await daemon.cli(["volume", "show", "held", "--json"])
            #expect(still.status == 0, "the attached volume must survive: \(sneaky)")
            let shrink = try await daemon.cli(["volume", "resize", "held#", "1M"])
            #expect(shrink.status != 0, "\(shrink)")
        }
    }

    @Test("resize: shrinking below data needs --force; --force discards and regrowing reads zeros")
    func resize() async throws {
        try await withDaemon { daemon in
            try await daemon.createVolume("r", "8M")
            try await daemon.qemuIOOK("r", ["write -P 0x51 0 2m", "write -P 0x52 6m 1m"])
            let before = try await daemon.volume("r")
            // Refused: would lose [6M, 7M). Exit 4, nothing changed, data intact.
            let refused = try await daemon.cli(["volume", "resize", "r", "4M"])
            #expect(refused.status == 4, "\(refused)")
            #expect(refused.stderr.contains("--force"), "the message says how to proceed: \(refused)")
            #expect(try await daemon.volume("r") == before)
            try await daemon.qemuIOOK("r", ["read -P 0x52 6m 1m"])
            // A straddled sub-block counts as data: [2M-512, ...) would cut into the first 2 MiB.
            let straddle = try await daemon.cli(["volume", "resize", "r", "\(2 * MiB - 512)"])
            #expect(straddle.status == 4, "\(straddle)")
            // Shrinking over unwritten space only is fine without --force.
            let gentle = try await daemon.cli(["volume", "resize", "r", "7M", "--json"])
            #expect(gentle.status == 0, "\(gentle)")
            #expect(try decode(VolumeDTO.self, gentle).size == UInt64(7 * MiB))
            // Bad sizes.
            for size in ["0", "1000", "10X", "1P"] {
                let result = try await daemon.cli(["volume", "resize", "r", size])
                #expect(result.status == 64, "resize to \(size): \(result)")
            }
            // --force: cut into data at an unaligned (but sector-aligned) size, then grow again.
            let cut = 1 * MiB + 4096 + 1024
            try await daemon.cliOK(["volume", "resize", "r", "\(cut)", "--force"])
            let cutVolume = try await daemon.volume("r")
            #expect(cutVolume.size == UInt64(cut))
            #expect(cutVolume.allocatedBytes == UInt64(MiB + 8192), "data past the end is gone: \(cutVolume)")
            let past = try await daemon.qemuIO("r", ["read 0 \(cut + 512)"])
            #expect(past.status != 0 || past.stdout.contains("failed") || past.stderr.contains("failed"), "\(past)")
            try await daemon.cliOK(["volume", "resize", "r", "8M"])
            try await daemon.qemuIOOK(
                "r", ["read -P 0x51 0 \(cut)", "read -P 0 \(cut) \(8 * MiB - cut)"])
            #expect(try await daemon.volume("r").allocatedBytes == UInt64(MiB + 8192))
            try await daemon.expectHealthy()
        }
    }

    @Test("resize with a client attached: growing works, shrinking needs --force")
    func resizeWhileAttached() async throws {
        try await withDaemon { daemon in
            try await daemon.createVolume("ra", "4M")
            let holder = try HeldConnection(uri: daemon.uri("ra"))
            defer { holder.close() }
            try await holder.waitUntilReady()
            let grow = try await daemon.cli(["volume", "resize", "ra", "6M"])
            #expect(grow.status == 0, "\(grow)")
            let shrink = try await daemon.cli(["volume", "resize", "ra", "2M"])
            #expect(shrink.status == 4 && shrink.stderr.contains("attached"), "\(shrink)")
            #expect(try await daemon.volume("ra").size == UInt64(6 * MiB))
            // A new session sees the new size at once.
            let info = try await runTool(Tools.nbdinfo, ["--size", daemon.uri("ra")])
            #expect(info.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "\(6 * MiB)", "\(info)")
        }
    }

    @Test("shrink --force under an attached client: its writes past the new end fail and never come back")
    func forcedShrinkUnderClient() async throws {
        try await withDaemon { daemon in
            try await daemon.createVolume("fs", "4M")
            let holder = try HeldConnection(uri: daemon.uri("fs"))
            defer { holder.close() }
            try await holder.waitUntilReady()
            try await holder.send("write \(3 * MiB) 0x33 65536")
            try await holder.send("write 0 0x34 65536")
            try await daemon.cliOK(["volume", "resize", "fs", "2M", "--force"])
            #expect(try await daemon.volume("fs").allocatedBytes == 65536)
            // The session still believes in 4 MiB; the server must refuse what lies past 2 MiB now.
            // (proto.md: a write "beyond the size of the device" SHOULD fail with ENOSPC.)
            let past = try await holder.send("write \(3 * MiB) 0x35 65536", allowError: true)
            #expect(past.hasPrefix("error"), "a write past the new end must fail: \(past)")
            // The same errno a write past the end gets before the shrink (NBDRequestValidator: ENOSPC).
            #expect(past.hasPrefix("error \(ENOSPC)"), "proto.md SHOULD: ENOSPC for a write beyond the end: \(past)")
            let straddle = try await holder.send("write \(2 * MiB - 4096) 0x36 8192", allowError: true)
            #expect(straddle.hasPrefix("error"), "a write straddling the new end must fail: \(straddle)")
            let readPast = try await holder.send("read \(3 * MiB) 4096", allowError: true)
            #expect(readPast.hasPrefix("error"), "\(readPast)")
            // Inside the new size the session keeps working.
            #expect(try await holder.send("read 0 65536") == "52")
            holder.close()
            _ = try await poll(timeout: 10) { try await daemon.volume("fs").attachments == 0 }
            try await daemon.cliOK(["volume", "resize", "fs", "4M"])
            try await daemon.qemuIOOK("fs", ["read -P 0x34 0 64k", "read -P 0 64k \(4 * MiB - 65536)"])
            #expect(try await daemon.volume("fs").allocatedBytes == 65536)
            try await daemon.expectHealthy()
        }
    }

    @Test("rename keeps an attached session working; the old export name disappears")
    func renameWithAttachedSession() async throws {
        try await withDaemon { daemon in
            try await daemon.createVolume("old", "4M")
            let holder = try HeldConnection(uri: daemon.uri("old"))
            defer { holder.close() }
            try await holder.waitUntilReady()
            try await holder.send("write 0 0x71 65536")
            try await daemon.cliOK(["volume", "rename", "old", "new"])
            #expect(try await daemon.volume("new").attachments == 1)
            // The held session keeps reading and writing the same volume.
            try await holder.send("write 65536 0x72 65536")
            let read = try await holder.send("read 0 131072")
            #expect(read == "113,114", "bytes seen by the renamed session: \(read)")
            try await holder.send("flush")
            #expect(try await runTool(Tools.nbdinfo, [daemon.uri("old")]).status != 0)
            try await daemon.qemuIOOK("new", ["read -P 0x71 0 64k", "read -P 0x72 64k 64k"])
            // Deleting is still refused while it is attached under its new name.
            let delete = try await daemon.cli(["volume", "delete", "new"])
            #expect(delete.status == 4 && delete.stderr.contains("attached"), "\(delete)")
            holder.close()
            _ = try await poll(timeout: 10) { try await daemon.volume("new").attachments == 0 }
            try await daemon.cliOK(["volume", "delete", "new"])
        }
    }

    @Test("delete is refused while a client is attached, --force detaches it with errors, not a hang")
    func deleteWhileAttached() async throws {
        try await withDaemon { daemon in
            try await daemon.createVolume("busy", "4M")
            let holder = try HeldConnection(uri: daemon.uri("busy"))
            defer { holder.close() }
            try await holder.waitUntilReady()
            try await holder.send("write 0 0x33 4096")
            let refused = try await daemon.cli(["volume", "delete", "busy"])
            #expect(refused.status == 4, "\(refused)")
            #expect(refused.stderr.contains("attached") && refused.stderr.contains("--force"), "\(refused)")
            let json = try await daemon.cli(["volume", "delete", "busy", "--json"])
            #expect(json.status == 4, "\(json)")
            #expect(try await daemon.volume("busy").attachments == 1)
            try await daemon.cliOK(["volume", "delete", "busy", "--force"])
            #expect(try await daemon.volumes().isEmpty)
            // The orphaned session gets errors, promptly.
            let after = try await holder.send("read 0 4096", allowError: true)
            #expect(after.hasPrefix("error"), "I/O on a deleted volume must fail: \(after)")
            // The name is free again, and the new volume is empty.
            try await daemon.createVolume("busy", "4M")
            try await daemon.qemuIOOK("busy", ["read -P 0 0 4k"])
            try await daemon.expectHealthy()
        }
    }

    /// `delete --force` refuses with "I/O in flight; try again" (exit 4) while a request is running on the
    /// volume (Pool.deleteVolume), so under a busy client it may take a few attempts. It must get there,
    /// the client must fail rather than hang, and nothing may leak.
    @Test("delete --force under a busy fio client: succeeds within a few attempts, fio fails fast, no leak")
    func forceDeleteUnderLoad() async throws {
        try await withDaemon { daemon in
            try await daemon.createVolume("hot", "32M")
            try await daemon.createVolume("cold", "4M")
            try await daemon.qemuIOOK("cold", ["write -P 0x43 0 1m"])
            let fio = try BackgroundProcess(
                Tools.fio,
                [
                    "--name=hot", "--ioengine=nbd", "--uri=\(daemon.uri("hot"))", "--rw=randrw", "--bs=16k",
                    "--size=32m", "--iodepth=32", "--time_based", "--runtime=600", "--output-format=terse",
                ])
            defer { fio.cleanUp() }
            // fio runs until the deletion ends its session; its runtime and this deadline only stop a hang
            // (each poll starts a CLI process, which a loaded machine can take seconds to do).
            let busy = try await poll(timeout: 120) {
                try await daemon.volume("hot").allocatedBytes > UInt64(MiB) || !fio.isRunning
            }
            try #require(busy && fio.isRunning, "fio did not start: \(fio.summary)")
            var refusals: [String] = []
            var deleted = false
            for _ in 0..<30 {
                let result = try await daemon.cli(["volume", "delete", "hot", "--force"])
                if result.status == 0 {
                    deleted = true
                    break
                }
                #expect(result.status == 4, "only 'try again' is acceptable: \(result)")
                refusals.append(result.stderr)
                try await Task.sleep(nanoseconds: 200_000_000)
            }
            #expect(deleted, "delete --force never got through a busy volume: \(refusals.prefix(3))")
            let fioStatus = try await fio.wait(timeout: 20)
            #expect(fioStatus != nil && fioStatus != 0, "fio must fail, not hang: \(fio.summary)")
            #expect(try await daemon.volumes().map(\.name) == ["cold"])
            let status = try await daemon.poolStatus()
            #expect(status.usedBytes == UInt64(MiB) && status.pendingFreeBytes == 0, "\(status)")
            try await daemon.qemuIOOK("cold", ["read -P 0x43 0 1m"])
            try await daemon.expectHealthy()
        }
    }

    @Test("--json output of every command parses and has the documented fields")
    func jsonOutput() async throws {
        try await withDaemon { daemon in
            let created = try await daemon.cliOK(["volume", "create", "j", "3M", "--json"])
            let object = try #require(try parseJSON(created.stdout) as? [String: Any], "\(created)")
            for key in [
                "name", "size", "chunkSize", "allocatedBytes", "snapshotCount", "attachments", "createdAt", "exportURI",
            ] {
                #expect(object[key] != nil, "create --json lacks \(key): \(created)")
            }
            let volume = try decode(VolumeDTO.self, created)
            #expect(volume.name == "j" && volume.size == UInt64(3 * MiB) && volume.chunkSize == 65536)
            #expect(volume.allocatedBytes == 0 && volume.snapshotCount == 0 && volume.attachments == 0)
            #expect(volume.exportURI == daemon.uri("j"), "\(volume)")
            #expect(ISO8601DateFormatter().date(from: volume.createdAt) != nil, "createdAt is ISO 8601: \(volume)")
            #expect(volume.origin == nil)

            #expect(try await daemon.volume("j") == volume)
            #expect(try await daemon.volumes() == [volume])
            let resized = try decode(VolumeDTO.self, try await daemon.cliOK(["volume", "resize", "j", "4M", "--json"]))
            #expect(resized.size == UInt64(4 * MiB))
            let renamed = try decode(VolumeDTO.self, try await daemon.cliOK(["volume", "rename", "j", "k", "--json"]))
            #expect(renamed.name == "k" && renamed.exportURI == daemon.uri("k"))
            let deleted = try await daemon.cliOK(["volume", "delete", "k", "--json"])
            #expect(try parseJSON(deleted.stdout) as? [String: String] == ["deleted": "k"], "\(deleted)")
            let emptyList = try await daemon.cliOK(["volume", "list", "--json"])
            #expect(
                try parseJSON(emptyList.stdout) as? [Any] != nil, "an empty list is still a JSON array: \(emptyList)")

            let status = try await daemon.poolStatus()
            #expect(
                status.dataDirectory == daemon.dataDirectory || status.dataDirectory.hasSuffix(daemon.dataDirectory))
            #expect(status.nbdAddress == "127.0.0.1:\(daemon.nbdPort)")
            #expect(["reflink", "copy_file_range", "userspace"].contains(status.copyMethod), "\(status)")
            #expect(status.volumeCount == 0 && status.usedBytes == 0 && status.failure == nil)
            #expect(!status.poolID.isEmpty && status.filesystemAvailableBytes != nil)
            let statusText = try await daemon.cliOK(["pool", "status", "--json"])
            let statusObject = try #require(try parseJSON(statusText.stdout) as? [String: Any])
            for key in [
                "poolID", "dataDirectory", "copyMethod", "volumeCount", "provisionedBytes", "usedBytes",
                "sharedBytes", "pendingFreeBytes", "fileBytes", "nbdAddress",
            ] {
                #expect(statusObject[key] != nil, "pool status --json lacks \(key)")
            }
            let (check, code) = try await daemon.poolCheck()
            #expect(code == 0 && check.healthy && check.errors.isEmpty && check.volumes == 0, "\(check)")

            // Errors with --json still go to stderr with the exit code; stdout stays empty.
            let missing = try await daemon.cli(["volume", "show", "zz", "--json"])
            #expect(missing.status == 3 && missing.stdout.isEmpty, "\(missing)")
        }
    }

    @Test("human output: table headers, fields, sizes")
    func humanOutput() async throws {
        try await withDaemon { daemon in
            let created = try await daemon.cliOK(["volume", "create", "h1", "10G"])
            #expect(created.stdout.contains("name:") && created.stdout.contains("h1"), "\(created)")
            #expect(created.stdout.contains("10 GiB (10737418240 bytes)"), "\(created)")
            try await daemon.createVolume("h2", "512K", chunkSize: "1M")
            let list = try await daemon.cliOK(["volume", "list"])
            let lines = list.stdout.split(separator: "\n").map(String.init)
            let header = lines.first?.split(separator: " ", omittingEmptySubsequences: true).map(String.init)
            #expect(header == ["NAME", "SIZE", "ALLOCATED", "CHUNK", "SNAPSHOTS", "SESSIONS", "EXPORT"], "\(list)")
            #expect(lines.count == 3, "\(list)")
            #expect(lines.dropFirst().first?.hasPrefix("h1 ") == true, "sorted by name: \(list)")
            #expect(list.stdout.contains(daemon.uri("h2")), "\(list)")
            let show = try await daemon.cliOK(["volume", "show", "h2"])
            for field in [
                "name:", "size:", "allocated:", "chunk size:", "snapshots:", "sessions:", "created:", "export:",
            ] {
                #expect(show.stdout.contains(field), "show lacks \(field): \(show)")
            }
            #expect(show.stdout.contains("1 MiB"), "\(show)")
            let status = try await daemon.cliOK(["pool", "status"])
            for field in [
                "pool:", "data directory:", "nbd:", "volumes:", "provisioned:", "used:", "shared:",
                "pending free:", "on disk:", "filesystem free:", "copy offload:", "health:",
            ] {
                #expect(status.stdout.contains(field), "pool status lacks \(field): \(status)")
            }
            #expect(status.stdout.contains("health:") && status.stdout.contains("ok"), "\(status)")
            let check = try await daemon.cliOK(["pool", "check"])
            #expect(check.stdout.contains("result:") && check.stdout.contains("healthy"), "\(check)")
            let deleted = try await daemon.cliOK(["volume", "delete", "h1"])
            #expect(deleted.stdout.contains("deleted volume h1"), "\(deleted)")
        }
    }

    @Test("usage errors: unknown commands, missing arguments, unknown options exit 64")
    func usageErrors() async throws {
        try await withDaemon { daemon in
            for arguments in [
                ["volume"], ["volume", "create"], ["volume", "create", "x"], ["volume", "frobnicate"],
                ["volume", "list", "--bogus"], ["pool", "check", "extra"], ["volume", "resize", "x"],
                ["volume", "rename", "x"], ["nonsense"],
            ] {
                let result = try await daemon.cli(arguments)
                #expect(result.status == 64, "\(arguments): \(result)")
            }
            let help = try await runTool(TestDaemon.binary, ["--help"])
            #expect(help.status == 0 && help.stdout.contains("volume"), "\(help)")
        }
    }

    /// How long a client command may take to say the daemon is not there. Connecting to a missing unix
    /// socket or a closed loopback port fails at once; a script should not wait longer than this.
    static let unreachableBudget: Double = 10

    @Test("no daemon running: exit 69 within seconds, with a sentence that says what to do")
    func daemonNotRunning() async throws {
        let scratch = try ScratchDirectory("nodaemon")
        defer { scratch.remove() }
        // A pool whose daemon has stopped (clean shutdown removes the socket) and one whose daemon was
        // killed (the socket file stays behind, nobody listens).
        try await withDaemon { stopped in
            try await withDaemon { killed in
                try await Self.probeUnreachable(scratch: scratch, stopped: stopped, killed: killed)
            }
        }
    }

    static func probeUnreachable(scratch: ScratchDirectory, stopped: TestDaemon, killed: TestDaemon) async throws {
        try await stopped.createVolume("v", "1M")
        let viaAPI = try await runTool(
            TestDaemon.binary, ["volume", "list", "--json", "--api", "unix:" + stopped.dataDirectory + "/cairn.sock"])
        #expect(viaAPI.status == 0 && viaAPI.stdout.contains("\"v\""), "--api works while running: \(viaAPI)")
        try await stopped.stop()
        #expect(stopped.process.terminationStatus == 0)
        try await killed.kill9()

        let probes: [(arguments: [String], mentions: String?)] = [
            (["volume", "list", "--data-dir", scratch.path], scratch.path),
            (["pool", "status", "--data-dir", scratch.path], scratch.path),
            (["volume", "create", "x", "1M", "--data-dir", scratch.path], scratch.path),
            (["pool", "check", "--data-dir", scratch.path], scratch.path),
            (["volume", "list", "--data-dir", stopped.dataDirectory], stopped.dataDirectory),
            (["volume", "show", "v", "--data-dir", killed.dataDirectory], killed.dataDirectory),
            (["volume", "list", "--api", "http://127.0.0.1:1"], "127.0.0.1:1"),
        ]
        // Run concurrently, each with the budget as its timeout (stopped by SIGTERM past it: exit 143).
        let results = try await withThrowingTaskGroup(of: (Int, ProcessResult, Double).self) { group in
            for (index, probe) in probes.enumerated() {
                group.addTask {
                    let start = Date()
                    let result = try await runTool(TestDaemon.binary, probe.arguments, timeout: Self.unreachableBudget)
                    return (index, result, Date().timeIntervalSince(start))
                }
            }
            var collected: [(Int, ProcessResult, Double)] = []
            for try await item in group { collected.append(item) }
            return collected.sorted { $0.0 < $1.0 }
        }
        for (index, result, elapsed) in results {
            let probe = probes[index]
            #expect(
                result.status == 69,
                "\(probe.arguments): exit \(result.status) after \(elapsed) s (143 = still trying after \(Self.unreachableBudget) s, stopped by SIGTERM): \(result)"
            )
            guard result.status == 69 else { continue }
            #expect(result.stderr.contains("cairn serve"), "says what to do: \(result)")
            if let mentions = probe.mentions {
                #expect(result.stderr.contains(mentions), "says where it looked: \(result)")
            }
            #expect(result.stderr.split(separator: "\n").count <= 3, "one short explanation: \(result)")
        }
    }

    @Test("a second daemon on the same pool is refused and does not disturb the first")
    func secondDaemonRefused() async throws {
        try await withDaemon { daemon in
            try await daemon.createVolume("v", "1M")
            let second = try await runTool(
                TestDaemon.binary, ["serve", "--data-dir", daemon.dataDirectory, "--nbd-port", "0"], timeout: 30)
            #expect(second.status != 0, "\(second)")
            #expect(try await daemon.volumes().map(\.name) == ["v"], "the first daemon still answers")
            try await daemon.qemuIOOK("v", ["write -P 1 0 4k", "read -P 1 0 4k"])
        }
    }
}

/// An NBD session held open by a python3-libnbd process, driven line by line through a FIFO, so a test
/// can act (rename, delete, resize) while a client is attached.
final class HeldConnection: @unchecked Sendable {
    // @unchecked: used from one test task at a time.
    let process: BackgroundProcess
    let fifo: String
    private var commandFD: Int32 = -1
    private var answered = 0

    static let script = """
        import os, sys, nbd
        h = nbd.NBD()
        h.connect_uri(sys.argv[1])
        print("ready", flush=True)
        with open(sys.argv[2]) as commands:
            for line in commands:
                words = line.split()
                try:
                    if words[0] == "write":
                        h.pwrite(bytes([int(words[2], 16)]) * int(words[3]), int(words[1]))
                        print("ok", flush=True)
                    elif words[0] == "read":
                        data = h.pread(int(words[2]), int(words[1]))
                        print(",".join(str(b) for b in sorted(set(data))), flush=True)
                    elif words[0] == "flush":
                        h.flush()
                        print("ok", flush=True)
                    elif words[0] == "quit":
                        break
                except nbd.Error as e:
                    print("error %s %s" % (e.errnum, e.string.replace("\\n", " ")), flush=True)
        try:
            h.shutdown()
        except nbd.Error:
            pass
        """

    init(uri: String) throws {
        fifo = FileManager.default.temporaryDirectory.appendingPathComponent("cairn-held-\(UUID().uuidString)").path
        guard mkfifo(fifo, 0o600) == 0 else { throw TestDaemonError("mkfifo failed") }
        process = try BackgroundProcess(Tools.python, ["-c", Self.script, uri, fifo])
    }

    /// Waits for "ready" (the session is attached), then opens the command pipe.
    func waitUntilReady() async throws {
        let ready = try await poll(timeout: 20) { self.lines.first == "ready" || !self.process.isRunning }
        guard ready, process.isRunning else { throw TestDaemonError("held connection failed: \(process.summary)") }
        // The reader opens the FIFO right after printing "ready"; until it has, a non-blocking open for
        // writing fails with ENXIO, so this never hangs on a reader that died.
        let opened = try await poll(timeout: 20) {
            self.commandFD = open(self.fifo, O_WRONLY | O_NONBLOCK | O_CLOEXEC)
            return self.commandFD >= 0 || !self.process.isRunning
        }
        guard opened, commandFD >= 0 else { throw TestDaemonError("cannot open the command FIFO: \(process.summary)") }
    }

    var lines: [String] { process.stdout.split(separator: "\n").map(String.init) }

    /// Sends one command and returns its answer line; throws on "error ..." unless `allowError`.
    @discardableResult
    func send(_ command: String, allowError: Bool = false, timeout: Double = 20) async throws -> String {
        let line = command + "\n"
        let written = line.withCString { write(commandFD, $0, strlen($0)) }
        guard written == line.utf8.count else { throw TestDaemonError("cannot send \(command)") }
        answered += 1
        let expectedLines = answered + 1
        let done = try await poll(timeout: timeout) { self.lines.count >= expectedLines || !self.process.isRunning }
        guard done, lines.count >= expectedLines else {
            throw TestDaemonError("no answer to '\(command)' within \(timeout) s: \(process.summary)")
        }
        let answer = lines[expectedLines - 1]
        if answer.hasPrefix("error"), !allowError { throw TestDaemonError("'\(command)': \(answer)") }
        return answer
    }

    /// Disconnects (quit, then kill if needed). Safe to call twice.
    func close() {
        if commandFD >= 0 {
            _ = "quit\n".withCString { write(commandFD, $0, 5) }
            Glibc.close(commandFD)
            commandFD = -1
        }
        let deadline = Date().addingTimeInterval(5)
        while process.isRunning && Date() < deadline { usleep(20_000) }
        process.cleanUp()
        unlink(fifo)
    }
}
