import CairnAPI
import Foundation
import Glibc
import InteropSupport
import Testing

/// Remote mirrors end to end: two real `cairn serve` daemons on loopback, host I/O with
/// qemu-io, faults from a TCP proxy between them, and after every scenario the two volumes compared
/// byte for byte with `qemu-img compare`.
@Suite("remote mirrors between two daemons")
struct MirrorDaemonTests {
    /// A loopback port for a target's replication listener (`LoopbackPort`).
    static func freePort() -> Int { LoopbackPort.free() }

    /// A pair: the target daemon listens for replication; both hold the same secret. Short timeouts so a
    /// fracture happens within seconds, but not so short that a target's durable write, waiting behind
    /// the writeback of a machine running every suite at once, fractures a healthy link: with 1 s and
    /// two retries a healed mirror fractured again in a full run.
    struct Pair {
        let primary: TestDaemon
        let target: TestDaemon
        let replicationPort: Int
        let scratch: ScratchDirectory

        static let primaryArguments = ["--mirror-timeout-ms", "5000", "--mirror-retries", "2"]

        static func start(targetExtra: [String] = [], primaryExtra: [String] = [], scratch given: ScratchDirectory? = nil)
            async throws -> Pair
        {
            let scratch = try given ?? ScratchDirectory("mirror")
            let secret = scratch.file("secret")
            try "a-secret-both-daemons-share-0123456789".write(toFile: secret, atomically: true, encoding: .utf8)
            let port = freePort()
            let target = try await TestDaemon(
                extraArguments: ["--replication-port", "\(port)", "--replication-secret-file", secret] + targetExtra)
            let primary = try await TestDaemon(
                extraArguments: ["--replication-secret-file", secret] + primaryArguments + primaryExtra)
            return Pair(primary: primary, target: target, replicationPort: port, scratch: scratch)
        }

        var secretFile: String { scratch.file("secret") }

        func destroy() async {
            await primary.destroy()
            await target.destroy()
            scratch.remove()
        }

        /// Both volumes hold the same bytes (qemu-img compare reads both through NBD).
        func expectEqual(_ source: String, _ copy: String, sourceLocation: SourceLocation = #_sourceLocation) async throws {
            let result = try await runTool(
                Tools.qemuImg, ["compare", "-f", "raw", "-F", "raw", primary.uri(source), target.uri(copy)])
            #expect(result.status == 0, "volumes differ: \(result)", sourceLocation: sourceLocation)
        }

        /// qemu-io read-only on the target (a mirrored target volume is exported read-only).
        func readTarget(_ volume: String, _ commands: [String], sourceLocation: SourceLocation = #_sourceLocation)
            async throws
        {
            let result = try await runTool(
                Tools.qemuIO, ["-r", "-f", "raw", target.uri(volume)] + commands.flatMap { ["-c", $0] })
            #expect(
                result.status == 0 && !(result.stdout + result.stderr).contains("failed"), "qemu-io \(commands): \(result)",
                sourceLocation: sourceLocation)
        }

        func mirror(_ volume: String) async throws -> MirrorDTO {
            try decode(MirrorDTO.self, try await primary.cliOK(["mirror", "status", volume, "--json"]))
        }

        func waitFor(_ volume: String, state: String, timeout: Double = 120) async throws -> MirrorDTO {
            var last: MirrorDTO?
            let reached = try await poll(timeout: timeout) {
                last = try await mirror(volume)
                return last?.state == state
            }
            try #require(reached, "mirror of \(volume) never became \(state): \(String(describing: last))")
            return last!
        }
    }

    static func withPair(
        targetExtra: [String] = [], primaryExtra: [String] = [], scratch: ScratchDirectory? = nil,
        _ body: (Pair) async throws -> Void
    ) async throws {
        let pair = try await Pair.start(targetExtra: targetExtra, primaryExtra: primaryExtra, scratch: scratch)
        do {
            try await body(pair)
            await pair.destroy()
        } catch {
            let logs = "--- primary log\n\(pair.primary.log)\n--- target log\n\(pair.target.log)"
            await pair.destroy()
            throw TestDaemonError("\(error)\n\(logs)")
        }
    }

    /// The fault proxy (scripts/mirror_fault_proxy.py) in front of the target's replication port.
    final class FaultProxy: @unchecked Sendable {
        let process: BackgroundProcess
        let port: Int
        let control: String

        init(targetPort: Int, control: String) async throws {
            self.control = control
            try "pass".write(toFile: control, atomically: true, encoding: .utf8)
            let process = try BackgroundProcess(
                "/usr/bin/python3", [Tools.packageRoot + "/scripts/mirror_fault_proxy.py", "0", "\(targetPort)", control])
            self.process = process
            var port = 0
            _ = try await poll(timeout: 20) {
                if let line = process.stdout.split(separator: "\n").first(where: { $0.hasPrefix("LISTENING ") }) {
                    port = Int(line.dropFirst("LISTENING ".count)) ?? 0
                }
                return port != 0
            }
            guard port != 0 else { throw TestDaemonError("fault proxy did not start: \(process.stderr)") }
            self.port = port
        }

        func set(_ mode: String) throws { try mode.write(toFile: control, atomically: true, encoding: .utf8) }

        func stop() {
            process.signal(SIGKILL)
            process.cleanUp()
        }
    }

    @Test("establish, synchronous writes, read-only target, refusals, sever and remove")
    func lifecycle() async throws {
        try await Self.withPair { pair in
            let primary = pair.primary
            try await primary.createVolume("src", "16M")
            try await primary.qemuIOOK("src", ["write -P 0x11 0 4M", "write -P 0x12 8M 1M"])
            let target = "127.0.0.1:\(pair.replicationPort)/dst"
            let established = try decode(
                MirrorDTO.self,
                try await primary.cliOK(["mirror", "establish", "src", "--target", target, "--wait", "--json"]))
            #expect(established.state == "mirrored" && established.dirtyExtents == 0, "\(established)")
            try await pair.expectEqual("src", "dst")

            // Synchronous: once the primary acknowledged, the target has it.
            try await primary.qemuIOOK("src", ["write -P 0x22 1M 64k", "write -z 9M 512k", "discard 12M 1M"])
            try await pair.readTarget("dst", ["read -P 0x22 1M 64k", "read -P 0 9M 512k"])
            try await pair.expectEqual("src", "dst")

            // Both status pages show the pair (the page over the API's unix socket, as curl fetches it).
            for (daemon, fragment) in [(primary, #"data-mirror="src""#), (pair.target, #"data-mirror-target="dst""#)] {
                let page = try await runTool(
                    "/usr/bin/curl", ["-s", "--unix-socket", daemon.dataDirectory + "/cairn.sock", "http://cairn/status"])
                #expect(page.stdout.contains(fragment) && page.stdout.contains("Remote mirrors"), "\(page)")
            }

            // The target volume is read-only to hosts while mirrored.
            let refused = try await pair.target.qemuIO("dst", ["write -P 0x33 0 4k"])
            #expect(refused.status != 0 || (refused.stdout + refused.stderr).contains("failed"), "\(refused)")

            // Typed refusals, shown as sentences; nothing changes.
            try await primary.createVolume("other", "8M")
            let mismatch = try await primary.cli(["mirror", "establish", "other", "--target", target])
            #expect(mismatch.status != 0 && mismatch.stderr.contains("bytes on the target"), "\(mismatch)")
            let unknownHost = try await primary.cli(["mirror", "establish", "other", "--target", "127.0.0.1:1/x"])
            #expect(unknownHost.status != 0 && unknownHost.stderr.contains("cannot reach"), "\(unknownHost)")
            let badTarget = try await primary.cli(["mirror", "establish", "other", "--target", "nonsense"])
            #expect(badTarget.status != 0 && badTarget.stderr.contains("HOST:PORT/VOLUME"), "\(badTarget)")
            let twice = try await primary.cli(["mirror", "establish", "src", "--target", target])
            #expect(twice.status != 0 && twice.stderr.contains("already mirrored"), "\(twice)")
            #expect(try await primary.cli(["mirror", "status", "other"]).status != 0)

            // The target daemon lists what is mirrored to it.
            let pairings = try decode(
                [MirrorTargetPairingDTO].self, try await pair.target.cliOK(["mirror", "targets", "--json"]))
            #expect(pairings.count == 1 && pairings[0].volume == "dst" && pairings[0].state == "mirrored" && pairings[0].readOnly, "\(pairings)")

            // The target answers status queries.
            let status = try decode(
                MirrorTargetStatusDTO.self, try await primary.cliOK(["mirror", "target", "src", "--json"]))
            #expect(status.volumes.contains { $0.name == "dst" && $0.role == "target" && $0.state == "mirrored" }, "\(status)")

            // A mirrored volume cannot be deleted, resized or rolled back behind its mirror's back, on either side.
            let delete = try await primary.cli(["volume", "delete", "src"])
            #expect(delete.status != 0 && delete.stderr.contains("mirrored"), "\(delete)")
            let deleteTarget = try await pair.target.cli(["volume", "delete", "dst"])
            #expect(deleteTarget.status != 0 && deleteTarget.stderr.contains("target of a mirror"), "\(deleteTarget)")
            // Metrics.
            let metrics = try await primary.scrapeMetrics()
            #expect(MetricsText.sample(metrics, "cairn_mirror_in_sync", ["volume=\"src\""]) == 1, "\(metrics.suffix(2000))")
            #expect(MetricsText.sample(metrics, "cairn_mirror_lag_bytes", ["volume=\"src\""]) == 0, "\(metrics.suffix(2000))")
            #expect(MetricsText.sample(metrics, "cairn_mirror_fractures_total", ["volume=\"src\""]) == 0, "\(metrics.suffix(2000))")

            // Online verify: every extent compared (SHA-256) on both sides.
            let verified = try decode(MirrorDTO.self, try await primary.cliOK(["mirror", "verify", "src", "--wait", "--json"]))
            #expect(verified.job?.kind == "mirror-verify" && verified.job?.message?.contains("all 16 extents equal") == true, "\(verified)")

            // Resize both sides together; the volume keeps mirroring at its new size.
            let grown = try decode(MirrorDTO.self, try await primary.cliOK(["mirror", "resize", "src", "24M", "--json"]))
            #expect(grown.extentCount == 24 && grown.state == "mirrored", "\(grown)")
            #expect(try await pair.target.volume("dst").size == 24 << 20)
            try await primary.qemuIOOK("src", ["write -P 0x2a 20M 1M"])
            try await pair.expectEqual("src", "dst")
            let shrink = try await primary.cli(["mirror", "resize", "src", "16M"])
            #expect(shrink.status != 0 && shrink.stderr.contains("--force"), "\(shrink)")
            let plainResize = try await primary.cli(["volume", "resize", "src", "32M"])
            #expect(plainResize.status != 0 && plainResize.stderr.contains("cairn mirror resize"), "\(plainResize)")

            // Sever: writes tracked; the target volume becomes writable there; re-establish over target
            // changes is refused without --discard-target-changes.
            let severed = try decode(MirrorDTO.self, try await primary.cliOK(["mirror", "sever", "src", "--json"]))
            #expect(severed.state == "severed", "\(severed)")
            try await primary.qemuIOOK("src", ["write -P 0x44 2M 64k"])
            #expect(try await pair.mirror("src").dirtyExtents >= 1)
            try await pair.target.qemuIOOK("dst", ["write -P 0x55 6M 4k"])
            let diverged = try await primary.cli(["mirror", "re-establish", "src"])
            #expect(diverged.status != 0 && diverged.stderr.contains("--discard-target-changes"), "\(diverged)")
            try await primary.cliOK(["mirror", "re-establish", "src", "--discard-target-changes", "--wait"])
            #expect(try await pair.mirror("src").state == "mirrored")
            try await pair.expectEqual("src", "dst")

            try await primary.cliOK(["mirror", "remove", "src"])
            #expect(try await primary.cli(["mirror", "status", "src"]).status != 0)
            // Unpaired: the target volume is an ordinary volume again.
            try await pair.target.qemuIOOK("dst", ["write -P 0x66 0 4k"])
            let released = try await pair.target.cli(["mirror", "release", "dst"])
            #expect(released.status != 0 && released.stderr.contains("not the target"), "\(released)")
        }
    }

    @Test("link stall fractures, writes continue and are tracked, re-establish copies only changed extents")
    func fractureAndResync() async throws {
        try await Self.withPair { pair in
            let primary = pair.primary
            let proxy = try await FaultProxy(targetPort: pair.replicationPort, control: pair.scratch.file("proxy"))
            defer { proxy.stop() }
            try await primary.createVolume("src", "32M")
            try await primary.qemuIOOK("src", ["write -P 0x11 0 32M"])
            try await primary.cliOK([
                "mirror", "establish", "src", "--target", "127.0.0.1:\(proxy.port)/dst", "--extent-size", "1M", "--wait",
            ])
            try await pair.expectEqual("src", "dst")

            // Stall: the host write waits for the retries, then completes once the mirror fractured.
            try proxy.set("stall")
            try await primary.qemuIOOK("src", ["write -P 0x22 3M 64k"])
            let fractured = try await pair.waitFor("src", state: "fractured", timeout: 120)
            #expect(fractured.lastError != nil && fractured.fractures >= 1, "\(fractured)")
            // Writes go on while fractured; each written extent is in the change map.
            try await primary.qemuIOOK("src", ["write -P 0x33 10M 4k", "write -P 0x34 20M 2M"])
            let tracked = try await pair.mirror("src")
            #expect(tracked.dirtyExtents >= 4 && tracked.dirtyExtents <= 6, "\(tracked)")

            try proxy.set("pass")
            let before = try await pair.mirror("src").bytesReplicated
            try await primary.cliOK(["mirror", "re-establish", "src", "--wait"])
            let after = try await pair.waitFor("src", state: "mirrored")
            // Only the changed extents crossed the link (each at most 1 MiB).
            #expect(after.bytesReplicated - before <= UInt64(tracked.dirtyExtents) << 20, "\(after)")
            try await pair.expectEqual("src", "dst")

            // Frames whose payload is damaged are retransmitted, without a fracture; the copies stay equal.
            let beforePayloadCorruption = try await pair.mirror("src")
            try proxy.set("corrupt-payload")
            try await primary.qemuIOOK("src", ["write -P 0x55 0 1M", "write -P 0x56 5M 256k"])
            try proxy.set("pass")
            let payloadCorrupted = try await pair.mirror("src")
            #expect(payloadCorrupted.retransmissions > beforePayloadCorruption.retransmissions, "\(payloadCorrupted)")
            #expect(payloadCorrupted.fractures == beforePayloadCorruption.fractures, "\(payloadCorrupted)")
            try await pair.expectEqual("src", "dst")

            // Damage anywhere (a short frame's header too): retransmitted, or the connection closes.
            try proxy.set("corrupt")
            try await primary.qemuIOOK("src", ["write -P 0x57 0 1M", "write -P 0x58 5M 256k"])
            try proxy.set("pass")
            let afterCorruption = try await pair.mirror("src")
            // A damaged header closes the connection (a reconnect resyncs the activity log); if the retries
            // ran out the mirror fractured, and re-establish heals it.
            var settled = afterCorruption
            _ = try await poll(timeout: 60) {
                settled = try await pair.mirror("src")
                return settled.state == "mirrored" || settled.state == "fractured"
            }
            if settled.state == "fractured" {
                try await primary.cliOK(["mirror", "re-establish", "src", "--wait"])
            }
            _ = try await pair.waitFor("src", state: "mirrored")
            try await pair.expectEqual("src", "dst")

            // Lost frames: the write waits, its frame is sent again after the timeout, and once the link
            // delivers again it completes; the mirror never fractures.
            let beforeLoss = try await pair.mirror("src")
            let (retransmittedBefore, fracturesBefore) = (beforeLoss.retransmissions, beforeLoss.fractures)
            try proxy.set("drop")
            let writer = try BackgroundProcess(Tools.qemuIO, ["-f", "raw", primary.uri("src"), "-c", "write -P 0x5d 7M 64k"])
            // Once the proxy has lost a frame (the write, or the hello of a reconnection if the connection had
            // closed meanwhile), let the link deliver again: the retransmission gets through.
            let lostFrame = try await poll(timeout: 30) {
                !((try? String(contentsOfFile: proxy.control + ".dropped", encoding: .utf8)) ?? "").isEmpty
            }
            try proxy.set("pass")
            #expect(lostFrame, "the proxy never saw a frame to lose")
            #expect(try await writer.wait(timeout: 60) == 0, "\(writer.summary)")
            writer.cleanUp()
            let afterLoss = try await pair.waitFor("src", state: "mirrored", timeout: 60)
            #expect(afterLoss.retransmissions > retransmittedBefore && afterLoss.fractures == fracturesBefore, "\(afterLoss)")
            try await pair.expectEqual("src", "dst")

            // Duplicate delivery and reordered frames: the copies stay equal, nothing fractures.
            for mode in ["dup", "reorder"] {
                try proxy.set(mode)
                try await primary.qemuIOOK(
                    "src", (0..<16).map { "write -P \($0 + 0x60) \($0 * 192)k 128k" } + ["write -z 8M 256k", "flush"])
                try proxy.set("pass")
                let after = try await pair.mirror("src")
                #expect(after.state == "mirrored", "\(mode): \(after)")
                try await pair.expectEqual("src", "dst")
            }

            // Link cut: fracture, then re-establish once it is back.
            try proxy.set("cut")
            try await primary.qemuIOOK("src", ["write -P 0x77 30M 64k"])
            _ = try await pair.waitFor("src", state: "fractured", timeout: 120)
            try proxy.set("pass")
            try await primary.cliOK(["mirror", "re-establish", "src", "--wait"])
            try await pair.expectEqual("src", "dst")
        }
    }

    @Test("primary kill -9 mid-workload: after restart the mirror resyncs from its change map")
    func primaryCrash() async throws {
        try await Self.withPair { pair in
            let primary = pair.primary
            try await primary.createVolume("src", "16M")
            try await primary.cliOK([
                "mirror", "establish", "src", "--target", "127.0.0.1:\(pair.replicationPort)/dst", "--wait",
            ])
            let workload = try BackgroundProcess(
                Tools.qemuIO,
                ["-f", "raw", primary.uri("src")]
                    + (0..<512).flatMap { ["-c", "write -P \($0 % 250 + 1) \(($0 * 37 % 64) * 256)k 256k"] })
            try await Task.sleep(nanoseconds: 300_000_000)
            try await primary.kill9()
            _ = try await workload.wait(timeout: 30)
            workload.cleanUp()
            try await primary.restart(extraArguments: ["--replication-secret-file", pair.secretFile] + Pair.primaryArguments)
            _ = try await pair.waitFor("src", state: "mirrored")
            try await pair.expectEqual("src", "dst")
            // And it keeps mirroring.
            try await primary.qemuIOOK("src", ["write -P 0x99 0 64k"])
            try await pair.readTarget("dst", ["read -P 0x99 0 64k"])
        }
    }

    @Test("target kill -9 under writes: the primary fractures, keeps writing, and resyncs once the target is back")
    func targetCrash() async throws {
        let scratch = try ScratchDirectory("mirror-alert")
        let alerts = scratch.file("alerts")
        try await Self.withPair(
            primaryExtra: ["--mirror-alert-command", "echo \"$CAIRN_MIRROR_VOLUME $CAIRN_MIRROR_ERROR\" >> \(alerts)"],
            scratch: scratch
        ) { pair in
            let primary = pair.primary
            try await primary.createVolume("src", "16M")
            try await primary.qemuIOOK("src", ["write -P 0x11 0 16M"])
            try await primary.cliOK([
                "mirror", "establish", "src", "--target", "127.0.0.1:\(pair.replicationPort)/dst", "--wait",
            ])
            try await pair.target.kill9()
            try await primary.qemuIOOK("src", ["write -P 0x22 0 1M", "write -P 0x23 7M 64k"])
            let fractured = try await pair.waitFor("src", state: "fractured", timeout: 120)
            #expect(fractured.dirtyExtents >= 2, "\(fractured)")
            // The operator was alerted (the alert command ran with the volume and the reason).
            var alert = ""
            _ = try await poll(timeout: 60) {
                alert = (try? String(contentsOfFile: alerts, encoding: .utf8)) ?? ""
                return !alert.isEmpty
            }
            #expect(alert.hasPrefix("src "), "alert: \(alert)")
            try await pair.target.restart(extraArguments: [
                "--replication-port", "\(pair.replicationPort)", "--replication-secret-file", pair.secretFile,
            ])
            try await primary.cliOK(["mirror", "re-establish", "src", "--wait"])
            try await pair.expectEqual("src", "dst")
        }
    }

    /// Node certificates for both daemons (one CA; SAN 127.0.0.1; no extendedKeyUsage, so each serves as
    /// server and client certificate), and a stranger's from another CA.
    static func makeCertificates(in scratch: ScratchDirectory) async throws {
        let script = """
            set -e
            cd "$1"
            openssl req -x509 -newkey rsa:2048 -nodes -keyout ca-key.pem -out ca.pem -days 2 -subj "/CN=Cairn mirror CA"
            printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\n' > node.ext
            for n in primary target; do
              openssl req -newkey rsa:2048 -nodes -keyout $n-key.pem -out $n.csr -subj "/CN=$n"
              openssl x509 -req -in $n.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -out $n.pem -days 2 -extfile node.ext
            done
            openssl req -x509 -newkey rsa:2048 -nodes -keyout stranger-key.pem -out stranger.pem -days 2 -subj "/CN=stranger" -addext subjectAltName=IP:127.0.0.1
            """
        let made = try await runTool("/bin/sh", ["-c", script, "sh", scratch.path])
        try #require(made.status == 0, "openssl: \(made)")
    }

    static func tlsArguments(_ scratch: ScratchDirectory, _ node: String, ca: String = "ca.pem") -> [String] {
        [
            "--replication-tls-cert", scratch.file("\(node).pem"), "--replication-tls-key", scratch.file("\(node)-key.pem"),
            "--replication-tls-ca", scratch.file(ca),
        ]
    }

    @Test("mutual TLS on the replication link; a primary without the CA's certificate is refused")
    func tls() async throws {
        let scratch = try ScratchDirectory("mirror-tls")
        try await Self.makeCertificates(in: scratch)
        try await Self.withPair(
            targetExtra: Self.tlsArguments(scratch, "target"), primaryExtra: Self.tlsArguments(scratch, "primary"),
            scratch: scratch
        ) { pair in
            let primary = pair.primary
            try await primary.createVolume("src", "8M")
            try await primary.qemuIOOK("src", ["write -P 0x5a 0 2M"])
            try await primary.cliOK([
                "mirror", "establish", "src", "--target", "127.0.0.1:\(pair.replicationPort)/dst", "--wait",
            ])
            try await primary.qemuIOOK("src", ["write -P 0x5b 4M 64k"])
            try await pair.expectEqual("src", "dst")

            // A daemon with a self-signed certificate (and the right secret) cannot pair with the target.
            let stranger = try await TestDaemon(extraArguments: [
                "--replication-secret-file", pair.secretFile, "--replication-tls-cert", scratch.file("stranger.pem"),
                "--replication-tls-key", scratch.file("stranger-key.pem"), "--replication-tls-ca", scratch.file("ca.pem"),
            ])
            let refused: ProcessResult
            do {
                try await stranger.createVolume("x", "8M")
                refused = try await stranger.cli([
                    "mirror", "establish", "x", "--target", "127.0.0.1:\(pair.replicationPort)/y",
                ])
                await stranger.destroy()
            } catch {
                await stranger.destroy()
                throw error
            }
            #expect(refused.status != 0 && refused.stderr.contains("cannot reach"), "\(refused)")
            #expect(try await pair.target.volumes().allSatisfy { $0.name != "y" })
        }
    }

    @Test("asynchronous mode (opt-in): writes complete locally, reach the target within the lag bound")
    func asynchronous() async throws {
        // A 60 s frame timeout (3 tries: a fracture only after ~3 min), so the stall below cannot fracture
        // however long a loaded machine takes to run qemu-io; the proxy delivers what it held afterwards.
        try await Self.withPair(primaryExtra: ["--mirror-timeout-ms", "60000"]) { pair in
            let primary = pair.primary
            let proxy = try await FaultProxy(targetPort: pair.replicationPort, control: pair.scratch.file("proxy"))
            defer { proxy.stop() }
            try await primary.createVolume("src", "16M")
            let established = try decode(
                MirrorDTO.self,
                try await primary.cliOK([
                    "mirror", "establish", "src", "--target", "127.0.0.1:\(proxy.port)/dst", "--async-lag", "4M",
                    "--wait", "--json",
                ]))
            // A stalled link does not hold host writes back (within the lag bound): the write completes long
            // before a synchronous one could (that one would wait for the retries: ~15 s).
            // Shown without a clock (the machine may be loaded): the write completed while the target
            // could not have acknowledged it, so the mirror still holds it unacknowledged.
            try proxy.set("stall")
            try await primary.qemuIOOK("src", ["write -P 0x40 2M 64k"])
            let during = try await pair.mirror("src")
            try proxy.set("pass")
            #expect(
                during.state == "mirrored" && (during.unacknowledgedBytes ?? 0) > 0,
                "the write did not complete ahead of the stalled target: \(during)")
            #expect(established.mode == "asynchronous" && established.asynchronousLagLimit == 4 << 20, "\(established)")
            try await primary.qemuIOOK("src", ["write -P 0x41 0 8M", "write -P 0x42 1M 64k", "write -z 4M 1M"])
            _ = try await poll(timeout: 120) { try await pair.mirror("src").unacknowledgedBytes == 0 }
            try await pair.expectEqual("src", "dst")
            let shown = try await primary.cliOK(["mirror", "status", "src"]).stdout
            #expect(shown.contains("ASYNCHRONOUS"), "\(shown)")
        }
    }

    @Test("establish while a host writes: no write lands behind the initial sync")
    func establishUnderWrites() async throws {
        try await Self.withPair { pair in
            let primary = pair.primary
            try await primary.createVolume("src", "16M")
            let workload = try BackgroundProcess(
                Tools.qemuIO,
                ["-f", "raw", primary.uri("src")]
                    + (0..<400).flatMap { ["-c", "write -P \($0 % 200 + 1) \(($0 * 29 % 64) * 256)k 256k"] })
            try await Task.sleep(nanoseconds: 100_000_000)
            try await primary.cliOK([
                "mirror", "establish", "src", "--target", "127.0.0.1:\(pair.replicationPort)/dst", "--wait",
            ])
            #expect(try await workload.wait(timeout: 120) == 0, "\(workload.summary)")
            workload.cleanUp()
            _ = try await pair.waitFor("src", state: "mirrored")
            try await pair.expectEqual("src", "dst")
        }
    }

    @Test("primary kill -9 in the middle of the initial sync: after restart the resync resumes where it stopped")
    func interruptedResyncResumes() async throws {
        try await Self.withPair(primaryExtra: ["--mirror-resync-delay-ms", "20"]) { pair in
            let primary = pair.primary
            try await primary.createVolume("src", "16M")
            try await primary.qemuIOOK("src", ["write -P 0x2d 0 16M"])
            try await primary.cliOK([
                "mirror", "establish", "src", "--target", "127.0.0.1:\(pair.replicationPort)/dst", "--extent-size", "64K",
            ])
            // 256 extents at ~200 per second: wait until at least two batches of 64 were checkpointed.
            let checkpointed = try await poll(timeout: 300) { try await pair.mirror("src").dirtyExtents <= 120 }
            let before = try await pair.mirror("src")
            try #require(checkpointed, "the resync checkpointed no two batches: \(before)")
            try await primary.kill9()
            try await primary.restart(extraArguments: ["--replication-secret-file", pair.secretFile] + Pair.primaryArguments)
            // The checkpoints survived the kill (the restarted resync may already have finished the rest).
            let resumed = try await pair.mirror("src")
            #expect(resumed.dirtyExtents < 256, "\(resumed)")
            let done = try await pair.waitFor("src", state: "mirrored")
            #expect(done.dirtyExtents == 0, "\(done)")
            if let job = done.job { #expect(job.done < 256, "the resync after the restart started over: \(job)") }
            try await pair.expectEqual("src", "dst")
        }
    }

    @Test("a graceful restart of the primary during a resync keeps the mirror and resumes")
    func gracefulRestart() async throws {
        try await Self.withPair(primaryExtra: ["--mirror-resync-delay-ms", "10"]) { pair in
            let primary = pair.primary
            try await primary.createVolume("src", "16M")
            try await primary.qemuIOOK("src", ["write -P 0x3e 0 16M"])
            try await primary.cliOK([
                "mirror", "establish", "src", "--target", "127.0.0.1:\(pair.replicationPort)/dst", "--extent-size", "256K",
            ])
            try await primary.stop()
            try await primary.restart(extraArguments: ["--replication-secret-file", pair.secretFile] + Pair.primaryArguments)
            let resumed = try await pair.mirror("src")
            #expect(resumed.state == "synchronizing" || resumed.state == "mirrored", "\(resumed)")
            _ = try await pair.waitFor("src", state: "mirrored")
            try await primary.qemuIOOK("src", ["write -P 0x3f 1M 64k"])
            try await pair.readTarget("dst", ["read -P 0x3f 1M 64k"])
            try await pair.expectEqual("src", "dst")
        }
    }
}
