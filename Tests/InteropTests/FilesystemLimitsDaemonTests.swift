import Foundation
import Glibc
import InteropSupport
import Testing

/// Pools on filesystems made for the test (loop mounts): XFS with reflink, where copy-on-write copies
/// become block sharing, and a tiny ext4 that fills up.
@Suite("pools on loop-mounted filesystems", .serialized)
struct FilesystemLimitsDaemonTests {
    /// A filesystem image of `size` made with `mkfs` and loop-mounted for the duration of `body`.
    static func withLoopMount<T>(
        _ mkfs: [String], size: String, _ body: (String) async throws -> T
    ) async throws -> T {
        let scratch = try ScratchDirectory("fs")
        defer { scratch.remove() }
        let image = scratch.file("fs.img")
        let mountPoint = scratch.file("mnt")
        try FileManager.default.createDirectory(atPath: mountPoint, withIntermediateDirectories: true)
        let truncate = try await runTool("/usr/bin/truncate", ["-s", size, image])
        try #require(truncate.status == 0, "\(truncate)")
        let make = try await runTool(mkfs[0], Array(mkfs.dropFirst()) + [image])
        try #require(make.status == 0, "\(make)")
        let mount = try await runTool("/usr/bin/mount", ["-o", "loop", image, mountPoint])
        try #require(mount.status == 0, "loop mounts need root and /dev/loop*: \(mount)")
        defer { _ = try? runBlockingUnmount(mountPoint) }
        return try await body(mountPoint)
    }

    static func runBlockingUnmount(_ path: String) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/umount")
        process.arguments = ["-l", path]
        try process.run()
        process.waitUntilExit()
    }

    static func poolStatus(_ daemon: TestDaemon) async throws -> [String: Any] {
        let status = try await daemon.cliOK(["pool", "status", "--json"])
        return try #require(try JSONSerialization.jsonObject(with: Data(status.stdout.utf8)) as? [String: Any])
    }

    @Test("on XFS with reflink, copy-on-write shares blocks (FICLONERANGE) and the data is right")
    func xfsReflink() async throws {
        try await Self.withLoopMount(["/usr/sbin/mkfs.xfs", "-q", "-m", "reflink=1"], size: "1G") { mount in
            let daemon = try await TestDaemon(dataDirectory: mount + "/pool")
            defer { Task { await daemon.destroy() } }
            let status = try await Self.poolStatus(daemon)
            #expect(status["copyMethod"] as? String == "reflink", "\(status)")
            try await daemon.cliOK(["volume", "create", "v", "64M"])
            _ = try await SnapshotDaemonTests.qemuIO(daemon, "v", ["write -P 0x61 0 16m"])
            try await daemon.cliOK(["snapshot", "create", "v@s"])
            // Unaligned writes complete their sub-blocks from the snapshot's data: reflinked, not copied.
            _ = try await SnapshotDaemonTests.qemuIO(
                daemon, "v", ["write -P 0x62 1000 100", "write -P 0x63 70000 5000", "read -P 0x61 0 1000",
                              "read -P 0x62 1000 100", "read -P 0x61 1100 68900", "read -P 0x63 70000 5000"])
            // COPY_AND_WRITE: whole chunk shared by reflink, then the buffer.
            try await daemon.cliOK(
                ["copy-and-write", "v", "--source", "0", "--target", "32M", "--offset", "4K", "--pattern", "0x64",
                 "--length", "4K"])
            // The target is the source chunk (with its unaligned 0x62 write at 1000) plus the buffer at 4K.
            _ = try await SnapshotDaemonTests.qemuIO(
                daemon, "v",
                ["read -P 0x61 33554432 1000", "read -P 0x62 33555432 100", "read -P 0x61 33555532 2996",
                 "read -P 0x64 32772k 4k", "read -P 0x61 32776k 56k"])
            _ = try await SnapshotDaemonTests.qemuIO(daemon, "v@s", readOnly: true, ["read -P 0x61 0 16m"])
            try await daemon.cliOK(["pool", "check"])
            await daemon.destroy()
        }
    }

    @Test("a full filesystem: writes needing space fail with ENOSPC, nothing is corrupted, snapshots stay valid")
    func outOfSpace() async throws {
        try await Self.withLoopMount(["/usr/sbin/mkfs.ext4", "-q", "-F"], size: "256M") { mount in
            let daemon = try await TestDaemon(dataDirectory: mount + "/pool")
            defer { Task { await daemon.destroy() } }
            try await daemon.cliOK(["volume", "create", "v", "1G"])
            _ = try await SnapshotDaemonTests.qemuIO(daemon, "v", ["write -P 0x71 0 32m", "flush"])
            try await daemon.cliOK(["snapshot", "create", "v@kept"])
            // Fill: the pool keeps 64 MiB for metadata, so writes fail well before the disk is full.
            let fill = try await runTool(
                Tools.qemuIO, ["-f", "raw", daemon.uri("v"), "-c", "write -P 0x72 32m 400m"], timeout: 300)
            #expect(fill.status != 0 || fill.stderr.contains("No space left") || fill.stdout.contains("No space left"), "\(fill)")
            #expect((fill.stdout + fill.stderr).contains("No space left on device"), "\(fill)")
            let status = try await Self.poolStatus(daemon)
            #expect(status["failure"] == nil, "running out of space is not a failure of the pool: \(status)")
            // What was written before is intact, live and in the snapshot; overwrites in place still work.
            _ = try await SnapshotDaemonTests.qemuIO(daemon, "v", ["read -P 0x71 0 32m", "write -P 0x73 0 4k", "read -P 0x73 0 4k"])
            _ = try await SnapshotDaemonTests.qemuIO(daemon, "v@kept", readOnly: true, ["read -P 0x71 0 32m"])
            try await daemon.cliOK(["pool", "check"])
            // Giving space back makes writes work again.
            _ = try await SnapshotDaemonTests.qemuIO(daemon, "v", ["discard 32m 400m", "flush"])
            _ = try await SnapshotDaemonTests.qemuIO(daemon, "v", ["write -P 0x74 64m 16m", "read -P 0x74 64m 16m"])
            try await daemon.cliOK(["pool", "check"])
            await daemon.destroy()
        }
    }
}
