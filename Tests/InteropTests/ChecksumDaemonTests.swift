import CairnAPI
import Foundation
import Glibc
import InteropSupport
import Testing

/// Silent corruption in a slot file, seen through a real `cairn serve`: qemu-io's read of the damaged
/// block fails with an I/O error (never wrong data) while its neighbours read, `cairn pool scrub` names
/// the volume and offset, and `/metrics` and `pool status` count it.
@Suite("data checksums of cairn serve")
struct ChecksumDaemonTests {
    static let chunk = 65536

    /// Flips a byte in slot 5 of a stopped daemon's 64 KiB slot file; returns the pattern byte that slot
    /// holds and the volume offset of the damaged 4 KiB block (volumes written with `write -P 0x10+i` per
    /// chunk i, so a slot's content says which chunk it holds).
    static func corruptSlotFive(_ dataDirectory: String) throws -> (pattern: UInt8, offset: Int) {
        let slots = try FileHandle(forUpdating: URL(fileURLWithPath: dataDirectory + "/data/slots-65536.dat"))
        defer { try? slots.close() }
        let slotOffset = UInt64(5 * chunk + 8192)
        try slots.seek(toOffset: slotOffset)
        let held = try #require(try slots.read(upToCount: 1)?.first)
        let volumeChunk = Int(held) - 0x10
        try #require((0..<16).contains(volumeChunk), "slot 5 holds byte \(held)")
        try slots.seek(toOffset: slotOffset + 10)
        try slots.write(contentsOf: [held ^ 0x01])
        return (held, volumeChunk * chunk + 8192)
    }

    static func isIOError(_ result: ProcessResult) -> Bool {
        result.stdout.contains("Input/output error") || result.stderr.contains("Input/output error")
    }

    @Test("a flipped byte in a slot file is EIO at its offset, found by pool scrub, counted by /metrics")
    func flippedByteIsFound() async throws {
        try await withDaemon { daemon in
            try await daemon.createVolume("c", "16M")
            // One pattern per chunk, so a slot's content says which volume chunk it holds.
            try await daemon.qemuIOOK("c", (0..<16).map { "write -P \(0x10 + $0) \($0 * Self.chunk) 64k" })
            try await daemon.stop()

            let (held, damaged) = try Self.corruptSlotFive(daemon.dataDirectory)
            let volumeChunk = damaged / Self.chunk

            try await daemon.restart()
            let bad = try await daemon.qemuIO("c", ["read -P \(held) \(damaged) 4k"])
            #expect(
                bad.stdout.contains("Input/output error") || bad.stderr.contains("Input/output error"),
                "reading the damaged block: \(bad)")
            #expect(!bad.qemuIOPatternFailed, "damaged data must never be returned: \(bad)")
            let bad512 = try await daemon.qemuIO("c", ["read -P \(held) \(damaged + 512) 512"])
            #expect(bad512.stdout.contains("Input/output error") || bad512.stderr.contains("Input/output error"), "\(bad512)")
            try await daemon.qemuIOOK(
                "c",
                [
                    "read -P \(held) \(damaged - 4096) 4k", "read -P \(held) \(damaged + 4096) 4k",
                    "read -P \(0x10 + (volumeChunk + 1) % 16) \((volumeChunk + 1) % 16 * Self.chunk) 64k",
                ])

            let scrub = try await daemon.cli(["pool", "scrub", "--wait", "--json"])
            #expect(scrub.status == 6, "pool scrub exits 6 on damage: \(scrub)")
            let report = try JSONDecoder().decode(ScrubReportDTO.self, from: Data(scrub.stdout.utf8))
            #expect(report.finished)
            #expect(report.verifiedBytes >= 16 * UInt64(Self.chunk) - 4096)
            #expect(report.damage.map { "\($0.volume)@\($0.offset)" } == ["c@\(damaged)"], "\(report)")
            #expect(report.damage.first?.live == true)
            let text = try await daemon.cli(["pool", "scrub", "--report"])
            #expect(text.stdout.contains("damaged: volume c offset \(damaged)"), "\(text)")

            let status = try await daemon.poolStatus()
            #expect(status.dataChecksums == true)
            #expect((status.checksumMismatches ?? 0) >= 2, "\(status)")
            let metrics = try #require(MetricsText.samples(try await daemon.scrapeMetrics()))
            #expect((metrics["cairn_pool_checksum_mismatches_total"] ?? 0) >= 2, "\(metrics)")
            #expect(daemon.log.contains("data checksum mismatch"), "the daemon logs the mismatch")

            // A whole-block rewrite heals the block; the next scrub is clean.
            try await daemon.qemuIOOK("c", ["write -P 0x77 \(damaged) 4k", "read -P 0x77 \(damaged) 4k"])
            let clean = try await daemon.cli(["pool", "scrub", "--wait", "--json"])
            #expect(clean.status == 0, "\(clean)")
        }
    }

    @Test("pool scrub --repair rewrites a damaged block from the mirror target; the read then returns the right bytes")
    func repairFromMirror() async throws {
        try await MirrorDaemonTests.withPair { pair in
            let primary = pair.primary
            try await primary.createVolume("src", "16M")
            try await primary.qemuIOOK("src", (0..<16).map { "write -P \(0x10 + $0) \($0 * Self.chunk) 64k" })
            let target = "127.0.0.1:\(pair.replicationPort)/dst"
            try await primary.cliOK(["mirror", "establish", "src", "--target", target, "--wait", "--json"])
            _ = try await pair.waitFor("src", state: "mirrored")
            try await primary.stop()
            let (held, damaged) = try Self.corruptSlotFive(primary.dataDirectory)
            try await primary.restart(
                extraArguments: ["--replication-secret-file", pair.secretFile] + MirrorDaemonTests.Pair.primaryArguments)
            _ = try await pair.waitFor("src", state: "mirrored")
            let bad = try await primary.qemuIO("src", ["read -P \(held) \(damaged) 4k"])
            #expect(Self.isIOError(bad), "the damaged block must fail before the repair: \(bad)")

            let repair = try await primary.cli(["pool", "scrub", "--wait", "--repair", "--json"])
            #expect(repair.status == 0, "\(repair)")
            let repairs = try JSONDecoder().decode(ScrubRepairDTO.self, from: Data(repair.stdout.utf8))
            #expect(repairs.blocks.map { "\($0.volume)@\($0.offset) \($0.repaired)" } == ["src@\(damaged) true"], "\(repairs)")
            try await primary.qemuIOOK("src", ["read -P \(held) \(damaged - 8192) 64k"])
            let clean = try await primary.cli(["pool", "scrub", "--wait", "--json"])
            #expect(clean.status == 0, "\(clean)")
            try await pair.expectEqual("src", "dst")
        }
    }
}
