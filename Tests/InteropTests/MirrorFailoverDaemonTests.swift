import CairnAPI
import Foundation
import Glibc
import InteropSupport
import Testing

/// Failover and back, end to end: `cairn mirror promote` on the target daemon, host writes there with
/// qemu-io, the refusal that names both choices, `re-establish --take-target-changes` (target → primary)
/// and `--discard-target-changes`, a kill -9 of the primary in the middle of the pull, and the
/// checksum-compare resync. Every scenario ends with `qemu-img compare` of the two volumes.
@Suite("remote mirrors: promote, take or discard the target's changes, checksum resync")
struct MirrorFailoverDaemonTests {
    typealias Pair = MirrorDaemonTests.Pair

    static func establish(_ pair: Pair, extent: String = "1M") async throws {
        try await pair.primary.cliOK([
            "mirror", "establish", "src", "--target", "127.0.0.1:\(pair.replicationPort)/dst", "--extent-size", extent,
            "--wait",
        ])
        _ = try await pair.waitFor("src", state: "mirrored")
    }

    static func targets(_ pair: Pair) async throws -> [MirrorTargetPairingDTO] {
        try decode([MirrorTargetPairingDTO].self, try await pair.target.cliOK(["mirror", "targets", "--json"]))
    }

    @Test("promote the target, write there and here, refused without a choice, take-target-changes: equal, target read-only again")
    func promoteAndTake() async throws {
        try await MirrorDaemonTests.withPair { pair in
            let primary = pair.primary
            try await primary.createVolume("src", "16M")
            try await primary.qemuIOOK("src", ["write -P 0x11 0 16M"])
            try await Self.establish(pair)

            // Failover: the target volume becomes writable there; the primary is fenced off.
            let promoted = try await pair.target.cliOK(["mirror", "promote", "dst"])
            #expect(promoted.stdout.contains("promoted"), "\(promoted)")
            let listed = try await Self.targets(pair)
            #expect(listed.first?.state == "promoted" && listed.first?.readOnly == false, "\(listed)")
            try await pair.target.qemuIOOK("dst", ["write -P 0x22 3M 64k", "write -P 0x23 9M 4k"])
            // The primary's next write reaches a target that refuses it: the mirror fractures, the write stays here.
            try await primary.qemuIOOK("src", ["write -P 0x33 5M 4k"])
            let fractured = try await pair.waitFor("src", state: "fractured")
            #expect(fractured.lastError?.contains("promoted") == true, "\(fractured)")
            #expect(try await Self.targets(pair).first?.changedExtents == 2)

            // No choice: refused with a sentence naming both sides and both choices; nothing changes.
            let refused = try await primary.cli(["mirror", "re-establish", "src"])
            #expect(refused.status != 0, "\(refused)")
            #expect(refused.stderr.contains("diverged") && refused.stderr.contains("--take-target-changes"), "\(refused)")
            #expect(refused.stderr.contains("--discard-target-changes"), "\(refused)")
            #expect(try await pair.mirror("src").state == "fractured")
            let both = try await primary.cli(["mirror", "re-establish", "src", "--take-target-changes", "--discard-target-changes"])
            #expect(both.status != 0 && both.stderr.contains("not both"), "\(both)")

            let taken = try decode(
                MirrorDTO.self,
                try await primary.cliOK(["mirror", "re-establish", "src", "--take-target-changes", "--wait", "--json"]))
            #expect(taken.state == "mirrored" && taken.takingTargetChanges != true, "\(taken)")
            // The target's extents 3 and 9 and the primary's extent 5 (the target's bytes win there).
            #expect((taken.lastResync?.pulled ?? 0) >= 3, "\(taken)")
            try await primary.qemuIOOK(
                "src", ["read -P 0x22 3M 64k", "read -P 0x23 9M 4k", "read -P 0x11 5M 4k", "read -P 0x11 0 3M"])
            try await pair.expectEqual("src", "dst")

            // An ordinary mirror again: read-only target, writes reach both sides.
            let pairings = try await Self.targets(pair)
            #expect(pairings.first?.state == "mirrored" && pairings.first?.readOnly == true, "\(pairings)")
            #expect(pairings.first?.promoted != true && pairings.first?.modified == false, "\(pairings)")
            let readOnly = try await pair.target.qemuIO("dst", ["write -P 0x44 0 4k"])
            #expect(readOnly.status != 0 || (readOnly.stdout + readOnly.stderr).contains("failed"), "\(readOnly)")
            try await primary.qemuIOOK("src", ["write -P 0x55 1M 64k"])
            try await pair.readTarget("dst", ["read -P 0x55 1M 64k"])
            try await pair.expectEqual("src", "dst")
        }
    }

    @Test("severed and written on both sides: refused as diverged, then --discard-target-changes; target-only: says so")
    func divergedThenDiscard() async throws {
        try await MirrorDaemonTests.withPair { pair in
            let primary = pair.primary
            try await primary.createVolume("src", "8M")
            try await primary.qemuIOOK("src", ["write -P 0x61 0 8M"])
            try await Self.establish(pair)
            // Wait for the activity log to drain, so the sever leaves the primary unchanged.
            _ = try await poll(timeout: 30) { try await pair.mirror("src").changedExtents == 0 }

            try await primary.cliOK(["mirror", "sever", "src"])
            try await pair.target.qemuIOOK("dst", ["write -P 0x62 2M 4k"])
            let targetOnly = try await primary.cli(["mirror", "re-establish", "src"])
            #expect(targetOnly.status != 0 && targetOnly.stderr.contains("The target changed"), "\(targetOnly)")
            #expect(targetOnly.stderr.contains("--take-target-changes") && targetOnly.stderr.contains("--discard-target-changes"))

            try await primary.qemuIOOK("src", ["write -P 0x63 6M 4k"])
            let diverged = try await primary.cli(["mirror", "re-establish", "src"])
            #expect(diverged.status != 0 && diverged.stderr.contains("Both sides changed (diverged)"), "\(diverged)")

            try await primary.cliOK(["mirror", "re-establish", "src", "--discard-target-changes", "--wait"])
            _ = try await pair.waitFor("src", state: "mirrored")
            try await pair.readTarget("dst", ["read -P 0x61 2M 4k", "read -P 0x63 6M 4k"])
            try await pair.expectEqual("src", "dst")
            #expect(try await Self.targets(pair).first?.changedExtents ?? 0 == 0)
        }
    }

    /// Resyncs paced at one extent an hour: a pull started under it cannot finish, or even clear its first
    /// batch, while a test looks at it, however slowly the machine runs the CLI. The tests move it on
    /// themselves: host reads pull the extents they touch (unpaced), and a restart without the pause lets
    /// the rest go at full speed.
    static let stalledResync = ["--mirror-resync-delay-ms", "3600000"]

    /// Promotes the target, writes `byte` over the whole target volume there, fractures the primary with
    /// one write, restarts the primary with stalled resyncs, and re-establishes with
    /// `--take-target-changes`: returns what the command answered.
    static func takeTargetChanges(_ pair: Pair, byte: String, extent: String) async throws -> MirrorDTO {
        let primary = pair.primary
        try await primary.createVolume("src", "16M")
        try await primary.qemuIOOK("src", ["write -P 0x70 0 16M"])
        try await Self.establish(pair, extent: extent)
        try await pair.target.cliOK(["mirror", "promote", "dst"])
        try await pair.target.qemuIOOK("dst", ["write -P \(byte) 0 16M"])
        // The primary learns of the promotion at its next write (refused by the target: it fractures).
        try await primary.qemuIOOK("src", ["write -P 0x73 0 4k"])
        _ = try await pair.waitFor("src", state: "fractured")
        // A fractured mirror stays fractured across a restart: nothing resyncs until re-establish.
        try await primary.stop()
        try await primary.restart(
            extraArguments: ["--replication-secret-file", pair.secretFile] + Pair.primaryArguments + Self.stalledResync)
        return try decode(
            MirrorDTO.self, try await primary.cliOK(["mirror", "re-establish", "src", "--take-target-changes", "--json"]))
    }

    /// The pull is visible from the moment re-establish returns: the set is built and durable before the
    /// command answers, so its answer and every status after it show all of it until extents are taken.
    static func expectPullShown(_ answered: MirrorDTO, _ pair: Pair, extents: UInt64) async throws {
        #expect(answered.takingTargetChanges == true && answered.pullExtents == extents, "\(answered)")
        let status = try await pair.mirror("src")
        #expect(status.takingTargetChanges == true && status.pullExtents == extents, "\(status)")
        #expect(status.state == "synchronizing", "\(status)")
    }

    @Test("primary kill -9 while it takes the target's changes: after restart the pull resumes where it stopped and both sides end equal")
    func primaryCrashDuringPull() async throws {
        try await MirrorDaemonTests.withPair { pair in
            let primary = pair.primary
            let answered = try await Self.takeTargetChanges(pair, byte: "0x72", extent: "64K")
            try await Self.expectPullShown(answered, pair, extents: 256)
            // Reads take extents 4-63 now (0-3 are in the job's hands, paused), each durably out of the set.
            try await primary.qemuIOOK("src", ["read -P 0x72 256k 3840k"])
            let midway = try await pair.mirror("src")
            #expect(midway.takingTargetChanges == true && midway.pullExtents == 196, "\(midway)")

            try await primary.kill9()
            try await primary.restart(extraArguments: ["--replication-secret-file", pair.secretFile] + Pair.primaryArguments)
            // Whatever phase the restarted resync is in (still pulling, copying the primary's side after the
            // pull, or done), the pull never shows more than the 196 extents left before the kill.
            let resumed = try await pair.mirror("src")
            #expect(resumed.state == "synchronizing" || resumed.state == "mirrored", "\(resumed)")
            #expect(resumed.takingTargetChanges != true || (resumed.pullExtents ?? 0) <= 196, "\(resumed)")
            let done = try await pair.waitFor("src", state: "mirrored")
            #expect(done.takingTargetChanges != true, "\(done)")
            // The pull resumed where it stopped (its set shrank durably before the kill), not from the start.
            #expect(done.lastResync?.pulled == 196, "the pull after the restart did not resume where it stopped: \(done)")
            try await primary.qemuIOOK("src", ["read -P 0x72 0 16M"])
            try await pair.expectEqual("src", "dst")
            #expect(try await Self.targets(pair).first?.readOnly == true)
        }
    }

    @Test("host reads on the primary during the pull see the target's bytes, before the pull reaches them")
    func readsDuringPull() async throws {
        try await MirrorDaemonTests.withPair { pair in
            let primary = pair.primary
            let answered = try await Self.takeTargetChanges(pair, byte: "0x92", extent: "1M")
            try await Self.expectPullShown(answered, pair, extents: 16)
            // Extent 15 is not pulled yet (the job holds 0-3, paused): the read pulls it first.
            let read = try await runTool(Tools.qemuIO, ["-r", "-f", "raw", primary.uri("src"), "-c", "read -P 0x92 15M 1M"])
            #expect(read.status == 0 && !(read.stdout + read.stderr).contains("failed"), "\(read)")
            let after = try await pair.mirror("src")
            #expect(after.takingTargetChanges == true && after.pullExtents == 15, "\(after)")

            // A graceful stop in the middle of the pull; the next start resumes it (without the pause).
            try await primary.stop()
            try await primary.restart(extraArguments: ["--replication-secret-file", pair.secretFile] + Pair.primaryArguments)
            let done = try await pair.waitFor("src", state: "mirrored")
            #expect(done.takingTargetChanges != true && done.lastResync?.pulled == 15, "\(done)")
            try await primary.qemuIOOK("src", ["read -P 0x92 0 16M"])
            try await pair.expectEqual("src", "dst")
        }
    }

    @Test("checksum resync: extents rewritten with the bytes they held are compared and not sent")
    func checksumResync() async throws {
        try await MirrorDaemonTests.withPair { pair in
            let primary = pair.primary
            try await primary.createVolume("src", "16M")
            try await primary.qemuIOOK("src", ["write -P 0x81 0 16M"])
            try await Self.establish(pair)
            try await primary.cliOK(["mirror", "sever", "src"])
            // Eight extents written again with what they hold, one with new bytes.
            try await primary.qemuIOOK("src", ["write -P 0x81 0 8M", "write -P 0x82 12M 4k"])
            let dirty = try await pair.mirror("src").dirtyExtents
            #expect(dirty >= 9)
            let resynced = try decode(
                MirrorDTO.self, try await primary.cliOK(["mirror", "re-establish", "src", "--checksum", "--wait", "--json"]))
            let result = try #require(resynced.lastResync, "\(resynced)")
            // Every extent the map holds is compared (possibly more: look-ahead activity bits), one is sent.
            #expect(result.compared >= dirty && result.sent == 1 && result.skipped == result.compared - 1, "\(result)")
            #expect(resynced.job?.message?.contains("skipped") == true, "\(resynced)")
            try await pair.expectEqual("src", "dst")
        }
    }
}
