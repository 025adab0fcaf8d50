import CairnAPI
import CairnTestSupport
import Foundation
import Glibc
import InteropSupport
import Testing

/// The real daemon serving a pool stored in the one-machine Ceph cluster scripts/test starts, driven by
/// real NBD clients: data, snapshots and clones through qemu-img; kill -9 under FUA/FLUSH writes; an
/// unreachable cluster at start.
@Suite struct RADOSDaemonTests {
    @Test func realClientsSnapshotsAndClonesOnARADOSPool() async throws {
        let rados = try RADOSTestCluster.arguments()
        let work = TestDaemon.makeDataDirectory()
        defer { try? FileManager.default.removeItem(atPath: work) }
        let reference = work + "/reference.raw"
        try RADOSTestCluster.writeRandomImage(reference, bytes: 8 << 20, seed: SeededGenerator.seedFromEnvironment())
        try await withDaemon(extraArguments: rados) { daemon in
            try await daemon.createVolume("disk", "8M")
            let convert = try await runTool(
                Tools.qemuImg, ["convert", "-n", "-f", "raw", "-O", "raw", reference, daemon.uri("disk")], timeout: 300)
            #expect(convert.status == 0, "\(convert)")
            let compare = try await runTool(Tools.qemuImg, ["compare", "-f", "raw", "-F", "raw", reference, daemon.uri("disk")])
            #expect(compare.status == 0, "\(compare)")

            // A snapshot, then 4 KiB overwrites: the clone of the snapshot still reads as the reference.
            try await daemon.cliOK(["snapshot", "create", "disk@before"])
            try await daemon.cliOK(["volume", "clone", "disk@before", "copy"])
            try await daemon.qemuIOOK("disk", ["write -P 0x5a 0 4k", "write -P 0x5b 1M 4k", "flush"])
            let clone = try await runTool(Tools.qemuImg, ["compare", "-f", "raw", "-F", "raw", reference, daemon.uri("copy")])
            #expect(clone.status == 0, "\(clone)")
            try await daemon.qemuIOOK("disk", ["read -P 0x5a 0 4k", "read -P 0x5b 1M 4k"])

            let info = try await runTool(Tools.nbdinfo, ["--size", daemon.uri("disk")])
            #expect(info.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "\(8 << 20)", "\(info)")

            let status = try await daemon.poolStatus()
            #expect(status.backend?.kind == "rados")
            #expect(status.backend?.clusterHealth?.hasPrefix("HEALTH_") == true, "\(String(describing: status.backend))")
            #expect((status.backend?.clusterTotalBytes ?? 0) > 0)
            #expect(status.backend?.ownership?.hasPrefix("held") == true)
            let text = try await daemon.cliOK(["pool", "status"])
            #expect(text.stdout.contains("cluster health"), "\(text)")
            try await daemon.expectHealthy()

            // A clean stop releases the pool: the next start needs no standby wait.
            try await daemon.stop()
            try await daemon.restart(extraArguments: rados)
            let again = try await runTool(Tools.qemuImg, ["compare", "-f", "raw", "-F", "raw", reference, daemon.uri("copy")])
            #expect(again.status == 0, "\(again)")
            try await daemon.qemuIOOK("disk", ["read -P 0x5a 0 4k"])
            try await daemon.expectHealthy()
        }
    }

    @Test func killNineUnderFUAAndFlushLosesNothingAcknowledged() async throws {
        let rados = try RADOSTestCluster.arguments()
        let seed = SeededGenerator.seedFromEnvironment()
        var random = SeededGenerator(seed: seed)
        let blocks = 16_384  // 8 MiB in 512-byte blocks
        try await withDaemon(extraArguments: rados) { daemon in
            try await daemon.cliOK(["volume", "create", "crash", "\(blocks * 512)"])
            let work = daemon.dataDirectory + ".work"
            try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: work) }
            let log = work + "/ops.log"
            let workload = Process()
            workload.executableURL = URL(fileURLWithPath: Tools.python)
            workload.arguments = [
                CrashTests.script, "run", daemon.uri("crash"), log, "--seed", "\(random.next() >> 1)",
                "--blocks", "\(blocks)", "--id-base", "10000000",
            ]
            workload.standardOutput = FileHandle.nullDevice
            workload.standardError = FileHandle.nullDevice
            try workload.run()
            try await CrashTests.waitForCompletions(in: log, process: workload)
            try await Task.sleep(nanoseconds: UInt64.random(in: 500_000_000...1_500_000_000, using: &random))
            try await daemon.kill9()
            workload.waitUntilExit()
            // The dead daemon's lease is still live: the restart stands by, fences it and takes over.
            try await daemon.restart(extraArguments: rados + ["--standby"])
            let verify = try await runProcess(
                Tools.python,
                [CrashTests.script, "verify", daemon.uri("crash"), log, "--blocks", "\(blocks)", "--state-out", work + "/state.json"],
                timeout: 300)
            #expect(verify.status == 0, "seed \(seed): \(verify)")
            #expect(verify.stdout.contains("durable block writes"), "seed \(seed): \(verify)")
            try await daemon.expectHealthyAfterCrash()
        }
    }

    @Test func anUnreachableClusterIsAClearErrorWithItsOwnExitCode() async throws {
        let directory = TestDaemon.makeDataDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let conf = directory + "/nobody.conf"
        try "[global]\nmon host = [v2:127.0.0.1:9]\nclient mount timeout = 3\n".write(
            toFile: conf, atomically: true, encoding: .utf8)
        let result = try await runProcess(
            TestDaemon.binary,
            ["serve", "--data-dir", directory, "--nbd-port", "0", "--ceph-conf", conf, "--rados-pool", "cairn"],
            timeout: 120)
        #expect(result.status == 75, "\(result)")
        #expect(result.stderr.contains("Ceph cluster"), "\(result)")
    }

    @Test func cephOptionsWithoutAConfigurationAreRefused() async throws {
        let result = try await runProcess(
            TestDaemon.binary, ["serve", "--data-dir", "/tmp/cairn-unused", "--rados-pool", "cairn", "--check-config"])
        #expect(result.status == 64, "\(result)")
        #expect(result.stderr.contains("--ceph-conf"), "\(result)")
    }
}

/// The cluster scripts/test starts, as daemon flags. Tests fail (never skip) without it.
enum RADOSTestCluster {
    /// Lease for test daemons: a takeover or a restart after kill -9 waits this long.
    static let leaseSeconds = 5

    static func arguments(
        namespace: String = "it-" + UUID().uuidString.lowercased(), leaseSeconds: Int = RADOSTestCluster.leaseSeconds
    ) throws -> [String] {
        let environment = ProcessInfo.processInfo.environment
        guard let conf = environment["CAIRN_CEPH_CONF"], let pool = environment["CAIRN_RADOS_POOL"] else {
            throw TestDaemonError(
                "CAIRN_CEPH_CONF / CAIRN_RADOS_POOL are not set: run scripts/test, or `scripts/ceph-cluster start DIR` "
                    + "and `source DIR/env`")
        }
        var arguments = ["--ceph-conf", conf, "--rados-pool", pool, "--rados-namespace", namespace]
        arguments += ["--ceph-id", environment["CAIRN_CEPH_ID"] ?? "admin", "--rados-lease-seconds", "\(leaseSeconds)"]
        if let keyring = environment["CAIRN_CEPH_KEYRING"] { arguments += ["--ceph-keyring", keyring] }
        return arguments
    }

    static func writeRandomImage(_ path: String, bytes: Int, seed: UInt64) throws {
        var random = SeededGenerator(seed: seed)
        var data = [UInt8](repeating: 0, count: bytes)
        // Every other 64 KiB stays zero, so the image has holes as well as data.
        for block in stride(from: 0, to: bytes, by: 128 << 10) {
            for i in block..<min(bytes, block + (64 << 10)) { data[i] = UInt8.random(in: 0...255, using: &random) }
        }
        try Data(data).write(to: URL(fileURLWithPath: path))
    }
}
