import CairnAPI
import CairnTestSupport
import Foundation
import InteropSupport
import Testing

/// Every data service on a pool stored in RADOS, through the real daemon and real clients: snapshots
/// and 4 KiB copy-on-write, a writable clone, changed-block tracking, dedup, a clone group with a
/// protected restore, a backup (archive, verify, restore), a restart that reopens everything from the
/// cluster, and a remote mirror to a second daemon (whose pool is a directory); pool check after each
/// stage. Bytes are checked with qemu-io patterns and qemu-img compare against a reference image.
@Suite struct RADOSDataServicesTests {
    static func compare(_ a: String, _ b: String, sourceLocation: SourceLocation = #_sourceLocation) async throws {
        let result = try await runTool(Tools.qemuImg, ["compare", "-f", "raw", "-F", "raw", a, b], timeout: 300)
        #expect(result.status == 0, "\(a) and \(b) differ: \(result)", sourceLocation: sourceLocation)
    }

    static func json(_ result: ProcessResult) throws -> [String: Any] {
        try #require(try parseJSON(result.stdout) as? [String: Any], "\(result)")
    }

    @Test func everyDataServiceOnARADOSPool() async throws {
        let rados = try RADOSTestCluster.arguments()
        let scratch = try ScratchDirectory("rados-services")
        defer { scratch.remove() }
        let seed = SeededGenerator.seedFromEnvironment()
        print("RADOSDataServicesTests seed \(seed)")
        let reference = scratch.file("reference.raw")
        try RADOSTestCluster.writeRandomImage(reference, bytes: 8 << 20, seed: seed)

        try await MirrorDaemonTests.withPair(primaryExtra: rados) { pair in
            let daemon = pair.primary
            try await daemon.createVolume("disk", "8M")
            let convert = try await runTool(
                Tools.qemuImg, ["convert", "-n", "-f", "raw", "-O", "raw", reference, daemon.uri("disk")], timeout: 300)
            #expect(convert.status == 0, "\(convert)")
            try await Self.compare(reference, daemon.uri("disk"))

            // Snapshot, then 4 KiB writes inside 64 KiB chunks: the snapshot keeps the reference.
            try await daemon.cliOK(["snapshot", "create", "disk@s1"])
            try await daemon.qemuIOOK("disk", ["write -P 0x5a 0 4k", "write -P 0x5b 1M 4k"])
            try await Self.compare(reference, daemon.uri("disk@s1"))
            try await daemon.qemuIOOK("disk", ["read -P 0x5a 0 4k", "read -P 0x5b 1M 4k"])

            // Changed-block tracking between two snapshots: exactly the two writes.
            try await daemon.cliOK(["snapshot", "create", "disk@s2"])
            let diff = try Self.json(try await daemon.cliOK(["snapshot", "diff", "disk@s1", "disk@s2", "--json"]))
            let extents = (diff["extents"] as? [[String: Any]] ?? []).map { [$0["offset"] as? Int, $0["length"] as? Int] }
            #expect(extents == [[0, 4096], [1 << 20, 4096]], "\(diff)")

            // A writable clone of s1: its writes touch neither the snapshot nor the volume.
            try await daemon.cliOK(["volume", "clone", "disk@s1", "copy"])
            try await Self.compare(reference, daemon.uri("copy"))
            try await daemon.qemuIOOK("copy", ["write -P 0x6c 2M 4k", "read -P 0x6c 2M 4k"])
            try await Self.compare(reference, daemon.uri("disk@s1"))
            try await daemon.qemuIOOK("disk", ["read -P 0x5a 0 4k"])

            // Dedup: a second volume with the reference's bytes shares them; a write unshares.
            try await daemon.createVolume("twin", "8M")
            let twin = try await runTool(
                Tools.qemuImg, ["convert", "-n", "-f", "raw", "-O", "raw", reference, daemon.uri("twin")], timeout: 300)
            #expect(twin.status == 0, "\(twin)")
            let dedup = try Self.json(try await daemon.cliOK(["dedup", "--wait", "--json"]))
            #expect(dedup["state"] as? String == "succeeded", "\(dedup)")
            try await daemon.qemuIOOK("twin", ["write -P 0x77 3M 4k", "read -P 0x77 3M 4k"])
            try await Self.compare(reference, daemon.uri("disk@s1"))
            try await daemon.expectHealthy()

            // A clone group: mirrored, fractured, written, then restored (protected) onto the source.
            let added = try decode(
                CloneDTO.self,
                try await daemon.cliOK(["clone", "add", "disk", "--name", "grp", "--extent-size", "256K", "--wait", "--json"]))
            #expect(added.state == "synchronized", "\(added)")
            try await Self.compare(daemon.uri("disk"), daemon.uri("grp"))
            try await daemon.cliOK(["clone", "fracture", "grp"])
            try await daemon.qemuIOOK("grp", ["write -P 0x11 4M 64k"])
            try await daemon.qemuIOOK("disk", ["write -P 0x22 5M 4k"])
            let restored = try decode(
                CloneDTO.self, try await daemon.cliOK(["clone", "restore", "grp", "--protected", "--wait", "--json"]))
            #expect(restored.state == "fractured", "\(restored)")
            try await daemon.qemuIOOK("disk", ["read -P 0x11 4M 64k", "read -P 0x5a 0 4k"])
            try await Self.compare(daemon.uri("disk"), daemon.uri("grp"))
            try await daemon.cliOK(["clone", "remove", "grp"])
            try await daemon.expectHealthy()

            // A backup: archived, verified, restored to a new volume that equals the source.
            let archive = scratch.file("disk.cbk")
            let started = try Self.json(try await daemon.cliOK(["backup", "start", "disk", "--to", archive, "--json"]))
            let id = try #require(started["id"] as? String, "\(started)")
            var phase = ""
            _ = try await poll(timeout: 180) {
                phase = try Self.json(try await daemon.cliOK(["backup", "status", id, "--json"]))["phase"] as? String ?? ""
                return phase == "succeeded" || phase == "failed"
            }
            #expect(phase == "succeeded", "backup \(id) ended \(phase)")
            let verify = try await runProcess(TestDaemon.binary, ["backup", "verify", archive], timeout: 300)
            #expect(verify.status == 0 && verify.stdout.contains("OK"), "\(verify)")
            try await daemon.cliOK(["backup", "restore", archive, "--to", "restored"])
            try await Self.compare(daemon.uri("disk"), daemon.uri("restored"))
            try await daemon.expectHealthy()

            // Everything comes back from the cluster after a restart.
            try await daemon.stop()
            try await daemon.restart(
                extraArguments: ["--replication-secret-file", pair.secretFile] + MirrorDaemonTests.Pair.primaryArguments + rados)
            try await Self.compare(reference, daemon.uri("disk@s1"))
            try await daemon.qemuIOOK("copy", ["read -P 0x6c 2M 4k"])
            try await daemon.qemuIOOK("twin", ["read -P 0x77 3M 4k"])
            try await Self.compare(daemon.uri("disk"), daemon.uri("restored"))
            try await daemon.expectHealthy()

            // A remote mirror to the second daemon (a directory pool): synchronous writes land on both.
            let target = "127.0.0.1:\(pair.replicationPort)/dst"
            let mirror = try decode(
                MirrorDTO.self, try await daemon.cliOK(["mirror", "establish", "disk", "--target", target, "--wait", "--json"]))
            #expect(mirror.state == "mirrored", "\(mirror)")
            try await pair.expectEqual("disk", "dst")
            try await daemon.qemuIOOK("disk", ["write -P 0x33 6M 64k", "write -z 7M 64k", "flush"])
            try await pair.readTarget("dst", ["read -P 0x33 6M 64k", "read -P 0 7M 64k"])
            try await pair.expectEqual("disk", "dst")
            try await daemon.expectHealthy()
            try await pair.target.expectHealthy()
        }
    }
}
