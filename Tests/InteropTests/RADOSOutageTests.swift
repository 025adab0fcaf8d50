import Foundation
import Glibc
import InteropSupport
import Testing

/// The cluster goes away under load: the only OSD of a cluster of the test's own (stopping the shared
/// one would disturb the other suites) is stopped mid-write and restarted. The daemon survives, clients
/// see stalls or errors, and everything acknowledged before the outage reads back afterwards.
@Suite struct RADOSOutageTests {
    static let script = Tools.packageRoot + "/scripts/ceph-cluster"

    @Test func anOSDOutageMidWriteLosesNothingAcknowledged() async throws {
        let cluster = TestDaemon.makeDataDirectory() + "/ceph"
        let start = try await runProcess(Self.script, ["start", cluster, "outage"], timeout: 300)
        defer { _ = try? runBlockingStop(cluster) }
        #expect(start.status == 0, "\(start)")
        guard start.status == 0 else { return }
        let rados = [
            "--ceph-conf", cluster + "/ceph.conf", "--ceph-keyring", cluster + "/keyring", "--rados-pool", "outage",
            "--rados-lease-seconds", "60",
        ]
        try await withDaemon(extraArguments: rados) { daemon in
            try await daemon.createVolume("disk", "8M")
            try await daemon.qemuIOOK("disk", ["write -P 0x11 0 1M", "write -P 0x22 4M 1M", "flush"])

            // Writes in flight while the OSD goes away.
            let writer = Process()
            writer.executableURL = URL(fileURLWithPath: Tools.qemuIO)
            writer.arguments = ["-f", "raw", daemon.uri("disk")] + (0..<200).flatMap { ["-c", "write -P 0x33 \(2 << 20 + ($0 % 64) * 4096) 4k"] }
            writer.standardOutput = FileHandle.nullDevice
            writer.standardError = FileHandle.nullDevice
            try writer.run()
            let stop = try await runProcess(Self.script, ["stop-osd", cluster], timeout: 120)
            #expect(stop.status == 0, "\(stop)")
            try await Task.sleep(nanoseconds: 3_000_000_000)
            #expect(daemon.process.isRunning, "the daemon died with the OSD:\n\(daemon.log)")
            let restart = try await runProcess(Self.script, ["start-osd", cluster], timeout: 300)
            #expect(restart.status == 0, "\(restart)")
            let deadline = Date().addingTimeInterval(120)
            while writer.isRunning && Date() < deadline { try await Task.sleep(nanoseconds: 50_000_000) }
            if writer.isRunning { kill(writer.processIdentifier, SIGKILL) }

            #expect(daemon.process.isRunning, "the daemon died during the outage:\n\(daemon.log)")
            try await daemon.qemuIOOK("disk", ["read -P 0x11 0 1M", "read -P 0x22 4M 1M"])
            // Service resumed: new writes go through.
            try await daemon.qemuIOOK("disk", ["write -P 0x44 6M 64k", "flush", "read -P 0x44 6M 64k"])
            try await daemon.expectHealthy()
        }
    }

    private func runBlockingStop(_ cluster: String) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Self.script)
        process.arguments = ["stop", cluster]
        try process.run()
        process.waitUntilExit()
        try? FileManager.default.removeItem(atPath: (cluster as NSString).deletingLastPathComponent)
    }
}
