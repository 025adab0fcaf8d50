import CairnAPI
import Foundation
import InteropSupport
import Testing

/// Clone groups end to end: `cairn clone ...` against a real `cairn serve`, data checked with qemu-io,
/// qemu-img and python3-libnbd, a protected restore under host I/O, and kill -9 in the middle of one.
@Suite("clone groups against cairn serve")
struct CloneDaemonTests {
    /// Slows the copy engines down (ms per extent) so that a test can act while a job runs.
    static func throttled(_ milliseconds: Int) -> [String] { ["--clone-extent-delay-ms", "\(milliseconds)"] }

    static func clone(_ daemon: TestDaemon, _ name: String) async throws -> CloneDTO {
        try decode(CloneDTO.self, try await daemon.cliOK(["clone", "show", name, "--json"]))
    }

    /// Polls until the clone reaches `state` (its job ended).
    static func waitFor(_ daemon: TestDaemon, _ name: String, state: String) async throws -> CloneDTO {
        var last: CloneDTO?
        let reached = try await poll(timeout: 120) {
            last = try await clone(daemon, name)
            return last?.state == state
        }
        try #require(reached, "clone \(name) never became \(state): \(String(describing: last))")
        return last!
    }

    /// src (16 MiB of 0x66) and its fractured clone c1 (16 MiB of 0x11), 64 extents of 256 KiB: the clone
    /// is created while the source is empty, so its initial sync copies nothing however slow the copy
    /// engine is made.
    static func fracturedCloneDifferingEverywhere(_ daemon: TestDaemon) async throws {
        try await daemon.createVolume("src", "16M")
        try await daemon.cliOK(["clone", "add", "src", "--name", "c1", "--extent-size", "256K", "--wait"])
        try await daemon.cliOK(["clone", "fracture", "c1"])
        try await daemon.qemuIOOK("c1", ["write -P 0x11 0 16M"])
        try await daemon.qemuIOOK("src", ["write -P 0x66 0 16M"])
        #expect(try await Self.clone(daemon, "c1").deltaExtents == 64)
    }

    static func compare(_ daemon: TestDaemon, _ a: String, _ b: String) async throws -> ProcessResult {
        try await runTool(Tools.qemuImg, ["compare", "-f", "raw", "-F", "raw", daemon.uri(a), daemon.uri(b)])
    }

    @Test("add, mirror, fracture, incremental sync, reverse sync, refusals and remove through the CLI")
    func lifecycle() async throws {
        try await withDaemon(extraArguments: Self.throttled(1)) { daemon in
            try await daemon.createVolume("src", "8M")
            try await daemon.qemuIOOK("src", ["write -P 0x11 0 8M"])
            let added = try decode(
                CloneDTO.self,
                try await daemon.cliOK(["clone", "add", "src", "--name", "c1", "--extent-size", "64K", "--wait", "--json"]))
            #expect(added.state == "synchronized" && added.deltaExtents == 0 && added.extentCount == 128, "\(added)")
            try await daemon.qemuIOOK("c1", ["read -P 0x11 0 8M"])

            // Synchronized: source writes are mirrored before they are acknowledged; the clone refuses writes.
            try await daemon.qemuIOOK("src", ["write -P 0x22 1M 64k"])
            try await daemon.qemuIOOK("c1", ["read -P 0x22 1M 64k"])
            let refused = try await daemon.qemuIO("c1", ["write -P 0x33 0 4k"])
            #expect((refused.stdout + refused.stderr).contains("failed"), "\(refused)")

            // Fractured: a point-in-time copy; three changed extents are all a sync copies.
            try await daemon.cliOK(["clone", "fracture", "c1"])
            try await daemon.qemuIOOK("src", ["write -P 0x44 2M 4k", "write -P 0x44 3207168 8k"])
            try await daemon.qemuIOOK("c1", ["read -P 0x11 2M 4k"])
            #expect(try await Self.clone(daemon, "c1").deltaExtents == 3)
            let synced = try decode(CloneDTO.self, try await daemon.cliOK(["clone", "sync", "c1", "--wait", "--json"]))
            #expect(synced.state == "synchronized" && synced.job?.done == 3, "\(synced)")
            #expect(try await Self.compare(daemon, "src", "c1").status == 0)

            // Refusals say why and change nothing.
            let reverse = try await daemon.cli(["clone", "reverse-sync", "c1"])
            #expect(reverse.status == 4 && reverse.stderr.contains("fracture it first"), "\(reverse)")
            let unprotected = try await daemon.cli(["clone", "restore", "c1"])
            #expect(unprotected.status == 64 && unprotected.stderr.contains("--protected"), "\(unprotected)")
            let elsewhere = try await daemon.cli(["clone", "add", "src", "--name", "c2", "--pool", "/mnt/other"])
            #expect(elsewhere.status == 64 && elsewhere.stderr.contains("not supported"), "\(elsewhere)")
            let delete = try await daemon.cli(["volume", "delete", "src", "--force"])
            #expect(delete.status == 4 && delete.stderr.contains("clone"), "\(delete)")
            #expect(try await daemon.volumes().map(\.name) == ["c1", "src"])

            // Reverse sync: the source gets the clone's content back, then they are synchronized again.
            try await daemon.cliOK(["clone", "fracture", "c1"])
            try await daemon.qemuIOOK("src", ["write -P 0x55 0 1M"])
            let back = try decode(CloneDTO.self, try await daemon.cliOK(["clone", "reverse-sync", "c1", "--wait", "--json"]))
            #expect(back.state == "synchronized", "\(back)")
            try await daemon.qemuIOOK("src", ["read -P 0x11 0 1M", "read -P 0x22 1M 64k", "read -P 0x44 2M 4k"])

            let list = try decode([CloneDTO].self, try await daemon.cliOK(["clone", "list", "--json"]))
            #expect(list.map(\.name) == ["c1"])
            try await daemon.cliOK(["clone", "remove", "c1"])
            #expect(try decode([CloneDTO].self, try await daemon.cliOK(["clone", "list", "--json"])).isEmpty)
            try await daemon.qemuIOOK("c1", ["write -P 0x66 0 4k"])
            try await daemon.expectHealthy()
        }
    }

    @Test("restore --protected while python3-libnbd reads and writes the source")
    func protectedRestoreUnderHostIO() async throws {
        let script = """
            import json, sys, time, nbd
            h = nbd.NBD()
            h.connect_uri(sys.argv[1])
            started = time.monotonic()
            ok = h.pread(4096, 9 << 20) == b"\\x11" * 4096
            first_ms = (time.monotonic() - started) * 1000
            for offset in range(0, 16 << 20, 1 << 20):
                ok = ok and h.pread(4096, offset + 12288) == b"\\x11" * 4096
            h.pwrite(b"\\x77" * 8192, (5 << 20) + 4096, nbd.CMD_FLAG_FUA)
            written = h.pread(8192, (5 << 20) + 4096) == b"\\x77" * 8192
            h.flush()
            h.shutdown()
            print(json.dumps({"clone_data": ok, "written": written, "first_read_ms": first_ms}))
            """
        try await withDaemon(extraArguments: Self.throttled(30)) { daemon in
            try await Self.fracturedCloneDifferingEverywhere(daemon)

            let started = try decode(
                CloneDTO.self, try await daemon.cliOK(["clone", "restore", "c1", "--protected", "--json"]))
            #expect(started.state == "restoring" && started.job?.state == "running", "\(started)")
            let result = try await runPython(script, [daemon.uri("src")])
            try #require(result.status == 0, "\(result)")
            let out = try #require(try parseJSON(result.stdout) as? [String: Any], "\(result)")
            #expect(out["clone_data"] as? Bool == true, "the source did not show the clone's data: \(out)")
            #expect(out["written"] as? Bool == true, "\(out)")

            let done = try await Self.waitFor(daemon, "c1", state: "fractured")
            #expect(done.deltaExtents == 1, "the write during the restore is the clone's new delta map: \(done)")
            // The clone turns fractured in the restore's last commit, a moment before its job is marked ended.
            let job = try #require(started.job, "\(started)")
            let ended = try decode(JobDTO.self, try await daemon.cliOK(["job", "show", "\(job.id)", "--wait", "--json"]))
            #expect(ended.state == "succeeded", "\(ended)")
            try await daemon.qemuIOOK(
                "src", ["read -P 0x11 0 5246976", "read -P 0x77 5246976 8k", "read -P 0x11 5255168 11522048"])
            try await daemon.qemuIOOK("c1", ["read -P 0x11 0 16M"])
            try await daemon.expectHealthy()
        }
    }

    @Test("job cancel pauses a sync (the clone stays synchronizing, fracture is refused); the same command resumes it")
    func cancelAndResume() async throws {
        // Two extents to copy, a minute apart: the cancel lands during the pause even on a loaded machine
        // (a cancel cuts the pause short, and the resumed job has no pause left after its last extent).
        try await withDaemon(extraArguments: Self.throttled(60_000)) { daemon in
            try await daemon.createVolume("src", "16M")
            try await daemon.cliOK(["clone", "add", "src", "--name", "c1", "--wait"])
            try await daemon.cliOK(["clone", "fracture", "c1"])
            try await daemon.qemuIOOK("src", ["write -P 0x21 0 4k", "write -P 0x21 1M 4k"])
            #expect(try await Self.clone(daemon, "c1").deltaExtents == 2)
            let started = try decode(CloneDTO.self, try await daemon.cliOK(["clone", "sync", "c1", "--json"]))
            let job = try #require(started.job, "\(started)")
            try await daemon.cliOK(["job", "cancel", "\(job.id)"])
            let ended = try decode(JobDTO.self, try await daemon.cliOK(["job", "show", "\(job.id)", "--wait", "--json"]))
            #expect(ended.state == "cancelled", "\(ended)")
            let paused = try await Self.clone(daemon, "c1")
            #expect(paused.state == "synchronizing" && paused.deltaExtents == 1, "\(paused)")
            let fracture = try await daemon.cli(["clone", "fracture", "c1"])
            #expect(fracture.status == 4 && fracture.stderr.contains("synchronizing"), "\(fracture)")
            let resumed = try decode(CloneDTO.self, try await daemon.cliOK(["clone", "sync", "c1", "--wait", "--json"]))
            #expect(resumed.state == "synchronized" && resumed.deltaExtents == 0, "\(resumed)")
            #expect(try await Self.compare(daemon, "src", "c1").status == 0)
        }
    }

    @Test("kill -9 in the middle of a protected restore: it resumes at start-up and keeps the host's writes")
    func protectedRestoreSurvivesKillNine() async throws {
        // A minute's pause after each of 64 extents: the restore is still running when the daemon is killed
        // however slow the machine (reads and writes of the host never wait for the pause; the restarted
        // daemon copies at full speed).
        try await withDaemon(extraArguments: Self.throttled(60_000)) { daemon in
            try await Self.fracturedCloneDifferingEverywhere(daemon)
            try await daemon.cliOK(["clone", "restore", "c1", "--protected"])
            // qemu-io writes with FUA: durable when acknowledged, so they must survive the kill. (qemu-io takes
            // plain byte offsets, no "3M+4k" arithmetic.)
            try await daemon.qemuIOOK("src", ["write -P 0x77 3M 4k", "read -P 0x11 12M 4k", "write -P 0x78 15736832 4k"])
            #expect(try await Self.clone(daemon, "c1").state == "restoring")
            try await daemon.kill9()

            try await daemon.restart(extraArguments: Self.throttled(5))
            let done = try await Self.waitFor(daemon, "c1", state: "fractured")
            #expect(done.deltaExtents == 2, "\(done)")
            try await daemon.qemuIOOK(
                "src",
                [
                    "read -P 0x11 0 3M", "read -P 0x77 3M 4k", "read -P 0x11 3149824 12578816", "read -P 0x11 15M 8k", "read -P 0x78 15736832 4k",
                    "read -P 0x11 15740928 1036288",
                ])
            try await daemon.qemuIOOK("c1", ["read -P 0x11 0 16M"])
            try await daemon.expectHealthy()
        }
    }
}
