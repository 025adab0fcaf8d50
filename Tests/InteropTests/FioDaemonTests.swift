import CairnAPI
import CairnTestSupport
import Foundation
import InteropSupport
import Testing

/// fio's nbd engine against a real `cairn serve`: concurrent random writes of several block sizes (512
/// bytes makes many writes share one fresh 4 KiB sub-block), each verified with crc32c, then the pool
/// checked, the daemon restarted and everything verified again from disk.
@Suite("fio ioengine=nbd against cairn serve")
struct FioDaemonTests {
    /// One fio run: four concurrent jobs on disjoint regions of the volume, each its own connections.
    static func arguments(uri: String, seed: UInt64, verifyOnly: Bool) -> [String] {
        var global = [
            "--ioengine=nbd", "--uri=\(uri)", "--rw=randwrite", "--verify=crc32c", "--verify_fatal=1",
            "--verify_state_save=0", "--randseed=\(seed)", "--output-format=terse", "--group_reporting=0",
        ]
        if verifyOnly { global.append("--verify_only") }
        let jobs: [(name: String, bs: String, offset: String, size: String, depth: Int)] = [
            ("b512", "512", "0", "2m", 32),
            ("b4k", "4k", "4m", "8m", 16),
            ("b64k", "64k", "16m", "8m", 24),
            ("b1m", "1m", "32m", "32m", 16),
        ]
        return global
            + jobs.flatMap {
                [
                    "--name=\($0.name)", "--bs=\($0.bs)", "--offset=\($0.offset)", "--size=\($0.size)",
                    "--iodepth=\($0.depth)",
                ]
            }
    }

    @Test("randwrite + verify=crc32c at 512, 4k, 64k and 1m, iodepth 16-32; data survives a restart")
    func randomWriteVerify() async throws {
        let seed = TestSeed.make()
        try await withDaemon { daemon in
            try await daemon.createVolume("fio", "64M")
            let run = try await runTool(
                Tools.fio, Self.arguments(uri: daemon.uri("fio"), seed: seed, verifyOnly: false), timeout: 180)
            #expect(run.status == 0, "seed \(seed): \(run)")
            #expect(!run.stderr.contains("verify:") && !run.stdout.contains("bad magic"), "seed \(seed): \(run)")
            // Every region fio wrote is allocated: 2 + 8 + 8 + 32 MiB.
            let volume = try await daemon.volume("fio")
            #expect(volume.allocatedBytes == UInt64(50 * MiB), "seed \(seed): \(volume)")
            #expect(volume.attachments == 0, "fio's sessions were all detached: \(volume)")
            try await daemon.expectHealthy()

            try await daemon.stop()
            try await daemon.restart()
            let again = try await runTool(
                Tools.fio, Self.arguments(uri: daemon.uri("fio"), seed: seed, verifyOnly: true), timeout: 180)
            #expect(again.status == 0, "seed \(seed): verify after restart: \(again)")
            try await daemon.expectHealthy()
        }
    }

    @Test("fio verify catches corruption (negative control)")
    func verifyDetectsCorruption() async throws {
        let seed = TestSeed.make()
        try await withDaemon { daemon in
            try await daemon.createVolume("neg", "8M")
            let arguments = [
                "--name=w", "--ioengine=nbd", "--uri=\(daemon.uri("neg"))", "--rw=write", "--bs=64k", "--size=4m",
                "--verify=crc32c", "--verify_fatal=1", "--verify_state_save=0", "--randseed=\(seed)",
            ]
            let write = try await runTool(Tools.fio, arguments, timeout: 120)
            try #require(write.status == 0, "\(write)")
            // Overwrite one block's middle behind fio's back, then verify only.
            try await daemon.qemuIOOK("neg", ["write -P 0x42 \(MiB + 4096) 512"])
            let verify = try await runTool(Tools.fio, arguments + ["--verify_only"], timeout: 120)
            #expect(verify.status != 0, "fio must report the corrupted block: \(verify)")
        }
    }
}
