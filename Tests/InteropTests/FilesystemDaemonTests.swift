import CairnAPI
import CairnTestSupport
import Foundation
import Glibc
import InteropSupport
import Testing

/// A real ext4 filesystem on a Cairn volume, without a kernel NBD client: qemu-storage-daemon connects
/// to the daemon over NBD and exports the volume as a FUSE file, which is formatted and loop-mounted.
@Suite("ext4 on a Cairn volume through a FUSE export", .serialized)
struct FilesystemDaemonTests {
    /// qemu-storage-daemon: Debian's (qemu-system-common) or the qemu 10 one scripts/test extracts.
    static var storageDaemon: String? {
        MoreTools.firstExecutable([MoreTools.qemuStorageDaemon, MoreTools.qemu10StorageDaemon])
    }

    static func isMounted(_ path: String) -> Bool {
        let mounts = (try? String(contentsOfFile: "/proc/mounts", encoding: .utf8)) ?? ""
        return mounts.split(separator: "\n").contains { $0.split(separator: " ").dropFirst().first == Substring(path) }
    }

    /// Exports `volume` as the FUSE file `mountpoint` until `stop` is called.
    final class FuseExport: @unchecked Sendable {
        let process: BackgroundProcess
        let mountpoint: String

        init(daemon: TestDaemon, volume: String, mountpoint: String, binary: String) async throws {
            self.mountpoint = mountpoint
            _ = FileManager.default.createFile(atPath: mountpoint, contents: nil)
            process = try BackgroundProcess(
                binary,
                [
                    "--blockdev",
                    "driver=nbd,node-name=n0,server.type=inet,server.host=127.0.0.1,server.port=\(daemon.nbdPort),export=\(volume)",
                    "--export", "type=fuse,id=e0,node-name=n0,mountpoint=\(mountpoint),writable=on",
                ])
            let up = try await poll(timeout: 20) {
                FilesystemDaemonTests.isMounted(mountpoint) || !self.process.isRunning
            }
            guard up, process.isRunning else {
                throw TestDaemonError("FUSE export did not come up: \(process.summary)")
            }
        }

        /// SIGTERM: qemu-storage-daemon flushes, disconnects from NBD and unmounts.
        func stop() async throws {
            process.signal(SIGTERM)
            let status = try await process.wait(timeout: 20)
            #expect(status == 0, "qemu-storage-daemon did not stop cleanly on SIGTERM: \(process.summary)")
            process.cleanUp()
            if FilesystemDaemonTests.isMounted(mountpoint) {
                _ = try? await runTool(MoreTools.umount, ["-l", mountpoint])
            }
        }
    }

    @Test("mkfs.ext4, mount, write files, umount, fsck clean, remount and verify; the pool holds the filesystem")
    func ext4RoundTrip() async throws {
        let binary = try #require(
            Self.storageDaemon, "qemu-storage-daemon missing (qemu-system-common or .cache/qemu10)")
        let seed = TestSeed.make()
        var random = SeededGenerator(seed: seed)
        let scratch = try ScratchDirectory("fs")
        defer { scratch.remove() }
        let image = scratch.file("disk")
        let directory = scratch.file("mnt")
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)

        // Files of awkward sizes with seeded contents, kept in memory to compare against.
        var files: [(name: String, data: [UInt8])] = []
        for (index, size) in [0, 1, 511, 4096, 4097, 65_537, 1_000_003, 3 * MiB + 17].enumerated() {
            var data = [UInt8](repeating: 0, count: (size + 7) / 8 * 8)
            data.withUnsafeMutableBytes { raw in
                let words = raw.bindMemory(to: UInt64.self)
                for i in words.indices { words[i] = random.next() }
            }
            data.removeLast(data.count - size)
            files.append(("f\(index)-\(size)", data))
        }
        try await withDaemon { daemon in
            try await daemon.createVolume("ext4", "96M")
            var export = try await FuseExport(daemon: daemon, volume: "ext4", mountpoint: image, binary: binary)
            var mounted = false
            defer {
                if mounted { _ = umount2(directory, Int32(MNT_DETACH)) }
                export.process.cleanUp()
                if Self.isMounted(image) { _ = umount2(image, Int32(MNT_DETACH)) }
            }
            #expect(try await daemon.volume("ext4").attachments == 1)
            let mkfs = try await runTool(MoreTools.mkfsExt4, ["-q", "-F", "-b", "4096", image], timeout: 120)
            try #require(mkfs.status == 0, "seed \(seed): \(mkfs)")
            let mount = try await runTool(MoreTools.mount, ["-o", "loop", image, directory])
            try #require(mount.status == 0, "\(mount)")
            mounted = true
            for file in files {
                try Data(file.data).write(to: URL(fileURLWithPath: directory + "/" + file.name))
            }
            try FileManager.default.createDirectory(
                atPath: directory + "/sub/deeper", withIntermediateDirectories: true)
            try Data("nested\n".utf8).write(to: URL(fileURLWithPath: directory + "/sub/deeper/n.txt"))
            // A deleted file: ext4 discards its blocks only on fstrim, which goes down as NBD TRIM.
            try Data(repeating: 0xaa, count: 8 * MiB).write(to: URL(fileURLWithPath: directory + "/gone"))
            sync()
            try FileManager.default.removeItem(atPath: directory + "/gone")
            let fstrim = try await runTool("/usr/sbin/fstrim", ["-v", directory])
            #expect(fstrim.status == 0, "fstrim: \(fstrim)")
            let umount = try await runTool(MoreTools.umount, [directory])
            try #require(umount.status == 0, "\(umount)")
            mounted = false

            let fsck = try await runTool(MoreTools.fsckExt4, ["-n", "-f", image], timeout: 120)
            #expect(fsck.status == 0, "seed \(seed): fsck after the first mount: \(fsck)")

            // Restart the whole chain: FUSE export gone, daemon restarted, new export.
            try await export.stop()
            try await daemon.stop()
            try await daemon.restart()
            export = try await FuseExport(daemon: daemon, volume: "ext4", mountpoint: image, binary: binary)
            let fsckAgain = try await runTool(MoreTools.fsckExt4, ["-n", "-f", image], timeout: 120)
            #expect(fsckAgain.status == 0, "seed \(seed): fsck after a daemon restart: \(fsckAgain)")
            let remount = try await runTool(MoreTools.mount, ["-o", "loop,ro", image, directory])
            try #require(remount.status == 0, "\(remount)")
            mounted = true
            for file in files {
                let read = try [UInt8](Data(contentsOf: URL(fileURLWithPath: directory + "/" + file.name)))
                #expect(read == file.data, "seed \(seed): \(file.name) differs after remount")
            }
            let nested = try String(contentsOfFile: directory + "/sub/deeper/n.txt", encoding: .utf8)
            #expect(nested == "nested\n")
            #expect(!FileManager.default.fileExists(atPath: directory + "/gone"))
            let umountAgain = try await runTool(MoreTools.umount, [directory])
            #expect(umountAgain.status == 0, "\(umountAgain)")
            mounted = false
            try await export.stop()

            // Thin: the pool holds the filesystem's data, not 96 MiB, and the trimmed file's space is back.
            let volume = try await daemon.volume("ext4")
            let payload = files.reduce(0) { $0 + $1.data.count }
            #expect(volume.allocatedBytes < UInt64(payload + 16 * MiB), "seed \(seed): \(volume)")
            #expect(volume.attachments == 0)
            // Independent check of what the pool stores: dump the volume over NBD, fsck and read a file.
            let dump = scratch.file("dump.raw")
            let convert = try await runTool(
                Tools.qemuImg, ["convert", "-f", "raw", "-O", "raw", daemon.uri("ext4"), dump])
            try #require(convert.status == 0, "\(convert)")
            let fsckDump = try await runTool(MoreTools.fsckExt4, ["-n", "-f", dump], timeout: 120)
            #expect(fsckDump.status == 0, "\(fsckDump)")
            let out = scratch.file("extracted")
            let debugfs = try await runTool("/usr/sbin/debugfs", ["-R", "dump /\(files[6].name) \(out)", dump])
            #expect(debugfs.status == 0, "\(debugfs)")
            let extracted = try? [UInt8](Data(contentsOf: URL(fileURLWithPath: out)))
            #expect(extracted == files[6].data, "seed \(seed): the file read straight from the dump differs")
            try await daemon.expectHealthy()
        }
    }
}
