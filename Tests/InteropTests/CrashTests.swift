import CairnAPI
import CairnTestSupport
import Foundation
import InteropSupport
import Testing

/// kill -9 the real daemon in the middle of a write/FUA/WRITE_ZEROES/FLUSH workload from libnbd, restart
/// it, and check every block of the volume against the block-device contract (Tests/python/crash_model.py):
/// whatever was durable before the kill reads back, nothing else appears, and `pool check` is healthy.
@Suite struct CrashTests {
    static let script = Tools.packageRoot + "/Tests/python/crash_model.py"
    /// 64 MiB in 512-byte blocks: small enough to verify in a second, large enough for many chunks.
    static let blocks = 131_072

    @Test(arguments: ["64K", "4K", "1M"])
    func killNineMidWorkloadLosesNothingAcknowledged(chunkSize: String) async throws {
        let seed = SeededGenerator.seedFromEnvironment()
        var random = SeededGenerator(seed: seed)
        let iterations = Int(ProcessInfo.processInfo.environment["CAIRN_CRASH_ITERATIONS"] ?? "") ?? 8
        try await withDaemon { daemon in
            try await daemon.cliOK(["volume", "create", "crash", "\(Self.blocks * 512)", "--chunk-size", chunkSize])
            let work = daemon.dataDirectory + ".work"
            try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: work) }
            var baseline: String? = nil
            var immediateWrites: UInt64 = 0
            for iteration in 0..<iterations {
                let context = "seed \(seed), chunk \(chunkSize), iteration \(iteration)"
                let log = "\(work)/ops-\(iteration).log"
                var arguments = [
                    Self.script, "run", daemon.uri("crash"), log, "--seed", "\(random.next() >> 1)",
                    "--blocks", "\(Self.blocks)", "--id-base", "\((iteration + 1) * 10_000_000)",
                ]
                if let baseline { arguments += ["--baseline", baseline] }
                let workload = try Self.launch(Tools.python, arguments)
                // Wait until operations are completing (python and libnbd start slowly on a loaded
                // machine), then let it run long enough for commits, flushes and allocations to be in
                // progress when the kill comes.
                try await Self.waitForCompletions(in: log, process: workload)
                let delay = UInt64.random(in: 200_000_000...1_500_000_000, using: &random)
                try await Task.sleep(nanoseconds: delay)
                immediateWrites += try await daemon.poolStatus().immediateWrites ?? 0
                try await daemon.kill9()
                workload.waitUntilExit()
                try await daemon.restart()
                let state = "\(work)/state-\(iteration).json"
                var verifyArguments = [
                    Self.script, "verify", daemon.uri("crash"), log, "--blocks", "\(Self.blocks)", "--state-out", state,
                ]
                if let baseline { verifyArguments += ["--baseline", baseline] }
                let verify = try await runProcess(Tools.python, verifyArguments, timeout: 300)
                #expect(verify.status == 0, "\(context): \(verify)")
                guard verify.status == 0 else { return }
                #expect(verify.stdout.contains("durable block writes"), "\(context): \(verify)")
                if iteration == 0 {
                    try await Self.checkerCatchesALostWrite(daemon: daemon, log: log, work: work, context: context)
                }
                let check = try await daemon.cli(["pool", "check", "--json"])
                #expect(check.status == 0 && check.stdout.contains("\"healthy\" : true"), "\(context): \(check)")
                baseline = state
                print("soak: kill -9 cycle done (chunk \(chunkSize), seed \(seed), iteration \(iteration))")
            }
            // Overwrites done on the event loop (page cache, no I/O thread) were among those killed.
            #expect(immediateWrites > 0, "seed \(seed), chunk \(chunkSize): no write took the immediate path")
        }
    }

    /// Negative control: the same log plus a FUA write that claims to have completed but never reached
    /// the server must fail verification, or the checker proves nothing.
    static func checkerCatchesALostWrite(daemon: TestDaemon, log: String, work: String, context: String) async throws {
        let forged = work + "/forged.log"
        var text = try String(contentsOfFile: log, encoding: .utf8)
        text += "I 999999999 U 100 4\nC 999999999\n"
        try text.write(toFile: forged, atomically: true, encoding: .utf8)
        let result = try await runProcess(
            Tools.python,
            [script, "verify", daemon.uri("crash"), forged, "--blocks", "\(blocks)", "--state-out", work + "/forged.json"])
        #expect(result.status == 1 && result.stdout.contains("block 100"), "\(context): forged log passed: \(result)")
    }

    static func waitForCompletions(in log: String, process: Process) async throws {
        let deadline = Date().addingTimeInterval(60)
        while true {
            if let text = try? String(contentsOfFile: log, encoding: .utf8), text.contains("\nC ") { return }
            if Date() >= deadline || !process.isRunning { break }
            try await Task.sleep(nanoseconds: 20_000_000)
        }
        throw TestDaemonError("the workload did not get going: \((try? String(contentsOfFile: log, encoding: .utf8)) ?? "no log")")
    }

    /// Snapshots taken while the workload runs must read back bit for bit after kill -9 and a restart,
    /// every round, while reclaim of deleted snapshots may be running when the kill comes.
    @Test func snapshotsNeverChangeAcrossKillNine() async throws {
        let seed = SeededGenerator.seedFromEnvironment()
        var random = SeededGenerator(seed: seed)
        let rounds = Int(ProcessInfo.processInfo.environment["CAIRN_CRASH_ITERATIONS"] ?? "") ?? 4
        try await withDaemon { daemon in
            try await daemon.cliOK(["volume", "create", "crash", "\(Self.blocks * 512)"])
            let work = daemon.dataDirectory + ".work"
            try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: work) }
            var baseline: String? = nil
            var digests: [String: String] = [:]
            var order: [String] = []
            var serial = 0
            for round in 0..<rounds {
                let context = "seed \(seed), round \(round)"
                let log = "\(work)/snap-ops-\(round).log"
                var arguments = [
                    Self.script, "run", daemon.uri("crash"), log, "--seed", "\(random.next() >> 1)",
                    "--blocks", "\(Self.blocks)", "--id-base", "\((round + 1) * 10_000_000)",
                ]
                if let baseline { arguments += ["--baseline", baseline] }
                let workload = try Self.launch(Tools.python, arguments)
                try await Self.waitForCompletions(in: log, process: workload)
                // Snapshots under load; each one's digest is taken right away, while writes continue.
                for _ in 0..<2 {
                    serial += 1
                    let name = "s\(serial)"
                    try await daemon.cliOK(["snapshot", "create", "crash@\(name)"])
                    digests[name] = try await Self.digest(daemon.uri("crash@\(name)"))
                    order.append(name)
                }
                // Keep three: deleting the oldest starts a reclaim that the kill may interrupt.
                if order.count > 3 {
                    let oldest = order.removeFirst()
                    try await daemon.cliOK(["snapshot", "delete", "crash@\(oldest)"])
                    digests[oldest] = nil
                }
                try await Task.sleep(nanoseconds: UInt64.random(in: 50_000_000...600_000_000, using: &random))
                try await daemon.kill9()
                workload.waitUntilExit()
                try await daemon.restart()
                for (name, digest) in digests.sorted(by: { $0.key < $1.key }) {
                    let after = try await Self.digest(daemon.uri("crash@\(name)"))
                    #expect(after == digest, "\(context): snapshot \(name) changed across kill -9")
                }
                let state = "\(work)/snap-state-\(round).json"
                var verify = [Self.script, "verify", daemon.uri("crash"), log, "--blocks", "\(Self.blocks)", "--state-out", state]
                if let baseline { verify += ["--baseline", baseline] }
                let result = try await runProcess(Tools.python, verify, timeout: 300)
                #expect(result.status == 0, "\(context): \(result)")
                guard result.status == 0 else { return }
                let check = try await daemon.cli(["pool", "check", "--json"])
                #expect(check.status == 0, "\(context): \(check)")
                baseline = state
                print("soak: kill -9 cycle done (snapshots, seed \(seed), round \(round), \(digests.count) snapshots unchanged)")
            }
        }
    }

    /// SHA-256 of a whole export, read through libnbd.
    static func digest(_ uri: String) async throws -> String {
        let script = """
            import hashlib, sys, nbd
            h = nbd.NBD(); h.connect_uri(sys.argv[1]); size = h.get_size(); digest = hashlib.sha256()
            for offset in range(0, size, 4 << 20):
                digest.update(h.pread(min(4 << 20, size - offset), offset))
            print(digest.hexdigest())
            """
        let result = try await runProcess(Tools.python, ["-c", script, uri], timeout: 120)
        guard result.status == 0 else { throw TestDaemonError("digest of \(uri): \(result)") }
        return result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    static func launch(_ executable: String, _ arguments: [String]) throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        return process
    }
}
