import CairnAPI
import CairnTestSupport
import Foundation
import Glibc
import InteropSupport
import Testing

/// One writer, safe takeover: node A serves a RADOS pool under writes and hangs (SIGSTOP); node B,
/// standing by, sees A's lease lapse, fences A, takes the pool and serves identical data. When A wakes
/// up it cannot write a byte: it stops serving, says why, and exits with its own status.
@Suite struct RADOSTakeoverTests {
    @Test func aStandbyTakesOverAndTheHungOwnerWritesNothing() async throws {
        let rados = try RADOSTestCluster.arguments()
        let work = TestDaemon.makeDataDirectory()
        defer { try? FileManager.default.removeItem(atPath: work) }
        let seed = SeededGenerator.seedFromEnvironment()
        let reference = work + "/reference.raw"
        try RADOSTestCluster.writeRandomImage(reference, bytes: 4 << 20, seed: seed)

        let a = try await TestDaemon(extraArguments: rados)
        var b: TestDaemon?
        do {
            try await a.createVolume("disk", "4M")
            try await a.createVolume("busy", "4M")
            let convert = try await runTool(
                Tools.qemuImg, ["convert", "-n", "-f", "raw", "-O", "raw", reference, a.uri("disk")], timeout: 300)
            #expect(convert.status == 0, "\(convert)")
            try await a.cliOK(["snapshot", "create", "disk@s1"])

            // Writes in flight on A when it hangs (to another volume: what they leave is unacknowledged).
            let writer = Process()
            writer.executableURL = URL(fileURLWithPath: Tools.qemuIO)
            writer.arguments = ["-f", "raw", a.uri("busy")] + (0..<2000).flatMap { ["-c", "write -P \($0 % 250 + 1) \(($0 * 4096) % (4 << 20)) 4k"] }
            writer.standardOutput = FileHandle.nullDevice
            writer.standardError = FileHandle.nullDevice
            try writer.run()
            try await Task.sleep(nanoseconds: 300_000_000)
            a.signal(SIGSTOP)
            let stoppedAt = Date()

            b = try await TestDaemon(extraArguments: rados + ["--standby"])
            let b = try #require(b)
            let compare = try await runTool(Tools.qemuImg, ["compare", "-f", "raw", "-F", "raw", reference, b.uri("disk")])
            let firstRead = Date()
            #expect(compare.status == 0, "\(compare)")
            print("RADOSTakeoverTests: takeover took \(String(format: "%.1f", firstRead.timeIntervalSince(stoppedAt))) s (lease \(RADOSTestCluster.leaseSeconds) s)")
            #expect(b.log.contains("fencing"), "B did not fence A:\n\(b.log)")
            for line in b.log.split(separator: "\n") where line.contains("notice") { print("RADOSTakeoverTests: B: \(line)") }

            // A wakes up: its lease renewal and writes are refused; it stops serving and says why.
            if writer.isRunning { kill(writer.processIdentifier, SIGKILL) }
            a.signal(SIGCONT)
            let deadline = Date().addingTimeInterval(120)
            while a.process.isRunning && Date() < deadline { try await Task.sleep(nanoseconds: 50_000_000) }
            #expect(!a.process.isRunning, "A kept running after it was fenced:\n\(a.log)")
            #expect(a.process.terminationStatus == 7, "A exited with \(a.process.terminationStatus):\n\(a.log)")
            #expect(a.log.contains("fenced") || a.log.contains("blocklisted"), "A did not say why:\n\(a.log)")

            // Nothing of A's reached the pool after the takeover: B still serves the same bytes.
            let again = try await runTool(Tools.qemuImg, ["compare", "-f", "raw", "-F", "raw", reference, b.uri("disk")])
            #expect(again.status == 0, "\(again)")
            try await b.qemuIOOK("disk", ["write -P 0x77 0 64k", "flush", "read -P 0x77 0 64k"])
            let snapshot = try await runTool(
                Tools.qemuImg, ["compare", "-f", "raw", "-F", "raw", reference, b.uri("disk@s1")])
            #expect(snapshot.status == 0, "\(snapshot)")
            try await b.expectHealthy()
            try await b.stop()
        } catch {
            let logs = "--- A\n\(a.log)\n--- B\n\(b?.log ?? "")"
            await a.destroy()
            await b?.destroy()
            throw TestDaemonError("\(error)\n\(logs)")
        }
        await a.destroy()
        await b?.destroy()
    }

    /// Fences a serving node's librados clients as an operator (or a takeover) does: reads the clients
    /// from the owner record, blocklists each, and makes the OSD take the new map (an operation from a
    /// client that has it) before answering. Prints the addresses fenced.
    static let fenceScript = """
        import json, sys, rados
        conf, keyring, pool, namespace = sys.argv[1:5]
        cluster = rados.Rados(conffile=conf, conf={"keyring": keyring})
        cluster.connect(timeout=30)
        io = cluster.open_ioctx(pool)
        io.set_namespace(namespace)
        owner = json.loads(io.get_xattr("cairn.header", "owner"))
        for address in owner["addresses"]:
            command = {"prefix": "osd blocklist", "blocklistop": "add", "addr": address}
            ret, _, status = cluster.mon_command(json.dumps(command), b"")
            if ret != 0:
                sys.exit(f"blocklist {address}: {ret} {status}")
        cluster.wait_for_latest_osdmap()
        io.stat("cairn.header")
        print(json.dumps(owner["addresses"]))
        """

    @Test func aFencedNodesMetadataCommitFailsAndNothingOfItLands() async throws {
        let namespace = "it-" + UUID().uuidString.lowercased()
        // A lease long enough that A's own renewal (every quarter lease) does not notice the fencing
        // before the commit does.
        let rados = try RADOSTestCluster.arguments(namespace: namespace, leaseSeconds: 20)
        let environment = ProcessInfo.processInfo.environment
        let conf = try #require(environment["CAIRN_CEPH_CONF"])
        let keyring = try #require(environment["CAIRN_CEPH_KEYRING"])
        let pool = try #require(environment["CAIRN_RADOS_POOL"])

        let a = try await TestDaemon(extraArguments: rados)
        var b: TestDaemon?
        do {
            try await a.createVolume("kept", "1M")
            try await a.qemuIOOK("kept", ["write -P 0x42 0 64k", "flush"])
            // A new chunk size is a new slot file: a commit to the store that also applies what the
            // metadata journal holds, so the deletion below reads no journal (through A's own client,
            // which would fail it anyway) and only the store's commit can fail it.
            try await a.createVolume("doomed", "1M", chunkSize: "4K")

            let fence = try await runPython(Self.fenceScript, [conf, keyring, pool, namespace], timeout: 120)
            try #require(fence.status == 0, "\(fence)")
            // A's next metadata commit goes to the store directly (a deletion): the VFS would say it is
            // durable although the OSD refused it; A must fail it, say why and stop.
            let delete = try await a.cli(["volume", "delete", "doomed", "--force"])
            #expect(delete.status != 0, "a fenced node reported a metadata commit as done: \(delete)")
            let deadline = Date().addingTimeInterval(120)
            while a.process.isRunning && Date() < deadline { try await Task.sleep(nanoseconds: 50_000_000) }
            #expect(!a.process.isRunning, "A kept running after it was fenced:\n\(a.log)")
            #expect(a.process.terminationStatus == 7, "A exited with \(a.process.terminationStatus):\n\(a.log)")
            #expect(a.log.contains("fenced") || a.log.contains("blocklisted"), "A did not say why:\n\(a.log)")

            // The next owner finds the volume A failed to delete, and A's acknowledged data.
            b = try await TestDaemon(extraArguments: rados + ["--standby"])
            let b = try #require(b)
            #expect(try await b.volumes().map(\.name).sorted() == ["doomed", "kept"])
            try await b.qemuIOOK("kept", ["read -P 0x42 0 64k"])
            try await b.expectHealthy()
            try await b.stop()
        } catch {
            let logs = "--- A\n\(a.log)\n--- B\n\(b?.log ?? "")"
            await a.destroy()
            await b?.destroy()
            throw TestDaemonError("\(error)\n\(logs)")
        }
        await a.destroy()
        await b?.destroy()
    }
}
