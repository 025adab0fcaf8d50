import CairnAPI
import Foundation
import Glibc
import InteropSupport
import Testing

/// Open iSCSI sessions in `cairn pool status --json` and on the status page, next to the NBD connection
/// count, while a real initiator (iscsi-perf) holds one; gone once it leaves.
@Suite("iSCSI sessions on the status page")
struct ISCSISessionsDaemonTests {
    @Test("a session appears with its initiator and target while iscsi-perf runs, and leaves with it")
    func sessionsAreListed() async throws {
        try await withDaemon { daemon in
            try await daemon.createVolume("busy", "16M")
            let initiator = "iqn.2026-12.test:perf"
            let perf = try BackgroundProcess(
                ISCSITools.perf, ["-i", initiator, "-m", "1", "-t", "120", try daemon.iscsiURL("busy")])
            defer { perf.cleanUp() }
            let target = ISCSITools.prefix + "busy"
            let appeared = try await poll(timeout: 30) {
                (try await daemon.poolStatus().iscsiSessions ?? []).contains { $0.target == target }
            }
            #expect(appeared, "iscsi-perf's session never showed: \(perf.summary)")
            let status = try await daemon.poolStatus()
            let session = try #require(status.iscsiSessions?.first { $0.target == target })
            #expect(session.initiator == initiator)
            #expect(session.chapName == nil)
            #expect(session.remoteAddress.hasPrefix("127.0.0.1:"))
            #expect(status.nbdConnections == 0)
            #expect(status.iscsiAddress == "127.0.0.1:\(try daemon.iscsiPort())")

            let page = try await runTool(
                "/usr/bin/curl",
                ["-sS", "--fail", "--unix-socket", daemon.dataDirectory + "/cairn.sock", "http://cairn/status"])
            #expect(page.status == 0, "\(page)")
            #expect(page.stdout.contains("data-iscsi-session=\"\(session.id)\""), "\(page.stdout)")
            #expect(page.stdout.contains(target) && page.stdout.contains(initiator))

            perf.signal(SIGTERM)
            _ = try await perf.wait(timeout: 20)
            let gone = try await poll(timeout: 30) { (try await daemon.poolStatus().iscsiSessions ?? []).isEmpty }
            #expect(gone, "the session is still listed after iscsi-perf exited")
        }
    }
}
