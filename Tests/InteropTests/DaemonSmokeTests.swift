import Foundation
import InteropSupport
import Testing

/// The README's quick start, end to end: create a volume with the CLI, write and read it with qemu-io.
@Suite struct DaemonSmokeTests {
    @Test func quickStartWorks() async throws {
        try await withDaemon { daemon in
            try await daemon.cliOK(["volume", "create", "disk0", "1G"])
            let io = try await runProcess(
                Tools.qemuIO,
                ["-f", "raw", daemon.uri("disk0"), "-c", "write -P 0xab 0 64k", "-c", "read -P 0xab 0 64k"])
            #expect(io.status == 0 && !io.stdout.contains("Pattern verification failed"), "\(io)")
            let show = try await daemon.cliOK(["volume", "show", "disk0", "--json"])
            let volume = try JSONSerialization.jsonObject(with: Data(show.stdout.utf8)) as? [String: Any]
            #expect(volume?["allocatedBytes"] as? Int == 65536, "\(show)")
        }
    }
}
