import Foundation
import Glibc
import InteropSupport
import Testing

/// A daemon whose disk really fails: the pool's ext4 lives on a loop device whose backing file sits on a
/// small tmpfs, so once the tmpfs is full the block device answers writeback with errors (a thin
/// provisioned LUN out of space, without device mapper). The pool must stop writes (EIO to hosts),
/// keep serving reads, and say `failed` in `pool status`, `/metrics` and the status page.
@Suite("a pool whose disk fails", .serialized)
struct DiskFailureDaemonTests {
    @Test("writeback errors stop writes: EIO to hosts, reads served, health failed everywhere")
    func failingDisk() async throws {
        let scratch = try ScratchDirectory("diskfail")
        defer { scratch.remove() }
        let backing = scratch.file("backing")
        let mountPoint = scratch.file("mnt")
        for directory in [backing, mountPoint] {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        }
        let tmpfs = try await runTool("/usr/bin/mount", ["-t", "tmpfs", "-o", "size=40m", "tmpfs", backing])
        try #require(tmpfs.status == 0, "tmpfs mounts need root: \(tmpfs)")
        defer { _ = try? FilesystemLimitsDaemonTests.runBlockingUnmount(backing) }
        let image = backing + "/fs.img"
        #expect(try await runTool("/usr/bin/truncate", ["-s", "512M", image]).status == 0)
        let make = try await runTool("/usr/sbin/mkfs.ext4", ["-q", "-F", "-E", "nodiscard", image])
        try #require(make.status == 0, "\(make)")
        let mount = try await runTool("/usr/bin/mount", ["-o", "loop", image, mountPoint])
        try #require(mount.status == 0, "loop mounts need root and /dev/loop*: \(mount)")
        defer { _ = try? FilesystemLimitsDaemonTests.runBlockingUnmount(mountPoint) }

        // The log stays off the failing filesystem: ext4 may turn read-only after the failed writeback and
        // drop every later line, the one this test looks for among them.
        let daemon = try await TestDaemon(dataDirectory: mountPoint + "/pool", logPath: scratch.file("daemon.log"))
        defer { Task { await daemon.destroy() } }
        try await daemon.cliOK(["volume", "create", "v", "1G"])
        _ = try await SnapshotDaemonTests.qemuIO(daemon, "v", ["write -P 0x41 0 4m", "flush"])
        #expect(try await FilesystemLimitsDaemonTests.poolStatus(daemon)["health"] as? String == "ok")

        // More than the tmpfs holds: writeback fails under ext4, the FLUSH's fdatasync reports it.
        let overflow = try await runTool(
            Tools.qemuIO, ["-f", "raw", daemon.uri("v"), "-c", "write -P 0x42 8m 96m", "-c", "flush"], timeout: 300)
        #expect((overflow.stdout + overflow.stderr).contains("Input/output error"), "\(overflow)")

        let status = try await FilesystemLimitsDaemonTests.poolStatus(daemon)
        #expect(status["health"] as? String == "failed", "\(status)")
        #expect((status["failure"] as? String)?.contains("writes stopped") == true, "\(status)")
        let text = try await daemon.cliOK(["pool", "status"])
        #expect(text.stdout.contains("failed"), "\(text)")

        // Writes get EIO; reads of what was flushed before are served.
        let write = try await runTool(Tools.qemuIO, ["-f", "raw", daemon.uri("v"), "-c", "write -P 0x43 0 4k"])
        #expect(write.status != 0 || (write.stdout + write.stderr).contains("Input/output error"), "\(write)")
        _ = try await SnapshotDaemonTests.qemuIO(daemon, "v", readOnly: true, ["read -P 0x41 0 4m"])
        // Management changes are refused too.
        #expect(try await daemon.cli(["volume", "create", "w", "1G"]).status != 0)

        let metrics = try #require(MetricsText.samples(try await daemon.scrapeMetrics()))
        #expect(metrics["cairn_pool_failed"] == 1, "\(metrics)")
        let page = try await runTool(
            "/usr/bin/curl", ["-sS", "--fail", "--unix-socket", daemon.dataDirectory + "/cairn.sock", "http://cairn/status"])
        #expect(page.stdout.contains("Health: failed"), "\(page.stdout.prefix(2000))")

        // The log names the file and the call once, at critical level.
        let log = (try? String(contentsOfFile: daemon.logPath, encoding: .utf8)) ?? ""
        #expect(log.contains("I/O error on the durability path"), "\(log.suffix(3000))")
        await daemon.destroy()
    }
}
