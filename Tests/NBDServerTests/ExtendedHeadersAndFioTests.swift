import Foundation
import InteropSupport
import NBDProtocol
import NBDServer
import Testing

/// qemu 10 speaks NBD_OPT_EXTENDED_HEADERS: every request has the 32-byte header, every reply the 32-byte
/// extended chunk header, and BLOCK_STATUS must come back as BLOCK_STATUS_EXT.
@Suite("qemu 10 with extended headers")
struct ExtendedHeadersInteropTests {
    @Test("write, read -P and map over extended headers")
    func writeReadMap() async throws {
        let export = MemoryExport(name: "disk", size: 16 << 20)
        let logs = LogCapture()
        try await withServer([export], logs: logs) { server, _ in
            let result = try await runProcess(
                Tools.qemu10IO,
                [
                    "-f", "raw", server.uri("disk"),
                    "-c", "write -P 0x42 0 1m", "-c", "write -z 1m 1m", "-c", "write -P 0x43 4m 64k",
                    "-c", "read -P 0x42 0 1m", "-c", "read -P 0 1m 3m", "-c", "read -P 0x43 4m 64k",
                ]
            )
            #expect(result.status == 0, "\(result)")
            #expect(!result.stdout.contains("Pattern verification failed"), "\(result)")
            #expect(export.contents(offset: 4 << 20, length: 1) == [0x43])

            let map = try await runProcess(Tools.qemu10Img, ["map", "-f", "raw", "--output=json", server.uri("disk")])
            #expect(map.status == 0, "\(map)")
            #expect(
                map.stdout.contains(
                    "\"start\": 4194304, \"length\": 65536, \"depth\": 0, \"present\": true, \"zero\": false, \"data\": true"
                ),
                "\(map)"
            )
            #expect(
                map.stdout.contains(
                    "\"start\": 4259840, \"length\": 12517376, \"depth\": 0, \"present\": true, \"zero\": true, \"data\": false"
                ),
                "\(map)"
            )

            let styles = logs.metadata(of: "NBD transmission started").map { $0["nbd.replies"] }
            #expect(!styles.isEmpty && styles.allSatisfy { $0 == "extended" }, "\(styles)")
        }
    }
}

/// fio's nbd engine with crc32c verification. Its first connection only reads the size and closes without
/// NBD_CMD_DISC, which must be harmless.
@Suite("fio ioengine=nbd")
struct FioInteropTests {
    @Test("random writes verify with crc32c at iodepth 16")
    func randomWriteVerify() async throws {
        let export = MemoryExport(name: "disk", size: 32 << 20)
        try await withServer([export]) { server, catalog in
            let result = try await runProcess(
                Tools.fio,
                [
                    "--name=verify", "--ioengine=nbd", "--uri=\(server.uri("disk"))", "--rw=randwrite", "--bs=4k",
                    "--size=16m", "--iodepth=16", "--verify=crc32c", "--verify_fatal=1", "--verify_state_save=0",
                    "--output-format=terse",
                ],
                timeout: 120
            )
            #expect(result.status == 0, "\(result)")
            #expect(!result.stderr.contains("verify"), "\(result)")
            #expect(export.counters.writes >= 4096, "fio wrote 16 MiB in 4 KiB blocks")
            #expect(export.counters.reads >= 4096, "and read all of it back to verify")
            // Every session fio opened, including the one it dropped without DISC, was detached.
            try await waitUntil { catalog.detachCount == catalog.attachCount }
            #expect(catalog.attachCount >= 2)
        }
    }
}

/// Polls `condition` for up to `timeout` seconds.
func waitUntil(timeout: Double = 5, _ condition: () -> Bool) async throws {
    let deadline = Date().addingTimeInterval(timeout)
    while !condition() {
        guard Date() < deadline else {
            Issue.record("condition not met within \(timeout) s")
            return
        }
        try await Task.sleep(nanoseconds: 10_000_000)
    }
}
