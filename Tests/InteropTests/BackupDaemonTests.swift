import Foundation
import InteropSupport
import Testing

/// `cairn backup` through the real daemon and real clients: the split at T under one export
/// name, status, drain, archive, verify, restore, export to qemu-img, transaction consistency for each
/// method, and kill -9 during the drain and during archiving.
@Suite("backups through cairn serve", .serialized)
struct BackupDaemonTests {
    static let bank = Tools.packageRoot + "/Tests/python/bank_backup.py"

    static func qemuIO(_ daemon: TestDaemon, _ export: String, _ commands: [String]) async throws {
        var arguments = ["-f", "raw", daemon.uri(export)]
        for command in commands { arguments += ["-c", command] }
        let result = try await runTool(Tools.qemuIO, arguments)
        #expect(
            result.status == 0 && !result.stdout.contains("verification failed") && !result.stderr.contains("failed"),
            "qemu-io \(export) \(commands): \(result)")
    }

    static func json(_ result: ProcessResult) throws -> [String: Any] {
        try #require(try parseJSON(result.stdout) as? [String: Any], "\(result)")
    }

    /// Polls `backup status ID` until it has succeeded or failed.
    static func waitForBackup(_ daemon: TestDaemon, _ id: String, seconds: Double = 120) async throws -> [String: Any] {
        let deadline = Date().addingTimeInterval(seconds)
        while true {
            let status = try Self.json(try await daemon.cliOK(["backup", "status", id, "--json"]))
            if let phase = status["phase"] as? String, phase == "succeeded" || phase == "failed" { return status }
            if Date() >= deadline { break }
            try await Task.sleep(nanoseconds: 100_000_000)
        }
        throw TestDaemonError("backup \(id) did not finish")
    }

    /// A libnbd session that writes, says it is ready, and stays open until `go` exists.
    /// A python NBD session kept open until `go` exists; killed through a pidfd, never by pid (a pid
    /// reaped by Foundation may already belong to another test's process).
    struct HeldSession {
        let process: Process
        let handle: ProcessHandle
        let go: String

        func kill() {
            handle.signal(SIGKILL)
            process.waitUntilExit()
        }
    }

    static func holdSession(_ daemon: TestDaemon, _ volume: String, scratch: ScratchDirectory) async throws -> HeldSession {
        let ready = scratch.file("ready-\(UUID().uuidString)")
        let go = scratch.file("go-\(UUID().uuidString)")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Tools.python)
        process.arguments = [Self.bank, "hold", daemon.uri(volume), ready, go]
        try process.run()
        let session = HeldSession(process: process, handle: ProcessHandle(pid: process.processIdentifier, executable: Tools.python), go: go)
        let deadline = Date().addingTimeInterval(60)
        while !FileManager.default.fileExists(atPath: ready) {
            guard Date() < deadline, process.isRunning else {
                session.kill()
                throw TestDaemonError("the holding session did not start")
            }
            try await Task.sleep(nanoseconds: 50_000_000)
        }
        return session
    }

    @Test("old sessions stay on image A under the same export name, new ones land on B; archive, verify, restore, export")
    func splitDrainArchiveRestore() async throws {
        let scratch = try ScratchDirectory("backup")
        defer { scratch.remove() }
        try await withDaemon { daemon in
            try await daemon.cliOK(["volume", "create", "v", "16M"])
            try await Self.qemuIO(daemon, "v", ["write -P 0x11 0 8m"])
            let old = try await Self.holdSession(daemon, "v", scratch: scratch)
            let go = old.go
            let archive = scratch.file("v.cbk")
            let started = try Self.json(try await daemon.cliOK(["backup", "start", "v", "--to", archive, "--json"]))
            let id = try #require(started["id"] as? String)
            #expect((started["sessionsOnA"] as? [Any])?.count == 1, "\(started)")
            let listed = try await daemon.cliOK(["backup", "status"])
            #expect(listed.stdout.contains(id) && listed.stdout.contains("draining"), "\(listed)")
            // The status page shows the backup draining, with the session still on A.
            let page = try await runTool(
                "/usr/bin/curl", ["-s", "--unix-socket", daemon.dataDirectory + "/cairn.sock", "http://cairn/status"])
            let onA = (started["sessionsOnA"] as? [[String: Any]])?.first
            let session = "#\(onA?["id"] as? Int ?? -1) \(onA?["address"] as? String ?? "?")"
            #expect(
                page.stdout.contains("data-backup=\"\(id)\"") && page.stdout.contains("draining")
                    && page.stdout.contains(session), "\(session) not in \(page)")
            // The split volume keeps its size, name, history and existence until the backup ends.
            for command in [
                ["volume", "resize", "v", "32M"], ["volume", "rename", "v", "w"], ["volume", "delete", "v", "--force"],
            ] {
                let refused = try await daemon.cli(command)
                #expect(refused.status != 0 && refused.stderr.contains("backup \(id)"), "\(command): \(refused)")
            }
            // A new session (same export name) is on B: its writes never reach A.
            try await Self.qemuIO(daemon, "v", ["write -P 0x44 8m 1m", "read -P 0x11 1m 1m"])
            // The image volume cannot be opened by hosts while it runs.
            let image = try await runTool(Tools.qemuIO, ["-f", "raw", "-r", daemon.uri("backup-\(id)-image"), "-c", "read 0 4k"])
            #expect(image.status != 0 || image.stderr.contains("failed") || image.stdout.contains("failed"), "\(image)")
            _ = FileManager.default.createFile(atPath: go, contents: nil)
            old.process.waitUntilExit()
            let done = try await Self.waitForBackup(daemon, id)
            #expect(done["phase"] as? String == "succeeded" && done["drain"] as? String == "drained", "\(done)")
            let volumes = try await daemon.cliOK(["volume", "list"])
            #expect(!volumes.stdout.contains("backup-"), "image A is discarded: \(volumes)")

            let verify = try await runProcess(TestDaemon.binary, ["backup", "verify", archive])
            #expect(verify.status == 0 && verify.stdout.contains("OK"), "\(verify)")
            try await daemon.cliOK(["backup", "restore", archive, "--to", "r"])
            // A: the old session's writes (account 0 and 1 blocks at 0 and 64K), not the new session's.
            try await Self.qemuIO(daemon, "r", ["read -P 0x11 128k 7m", "read -P 0 8m 1m"])
            try await Self.qemuIO(daemon, "v", ["read -P 0x44 8m 1m"])
            // Refused without --force; nothing changes.
            let again = try await daemon.cli(["backup", "restore", archive, "--to", "r"])
            #expect(again.status == 4 && again.stderr.contains("--force"), "\(again)")
            try await daemon.cliOK(["backup", "restore", archive, "--to", "r", "--force"])

            // A damaged archive: verify says where, restore refuses and creates nothing.
            var bytes = try Data(contentsOf: URL(fileURLWithPath: archive))
            bytes[bytes.count / 2] ^= 0x5A
            let damaged = scratch.file("damaged.cbk")
            try bytes.write(to: URL(fileURLWithPath: damaged))
            let bad = try await runProcess(TestDaemon.binary, ["backup", "verify", damaged])
            #expect(bad.status != 0 && bad.stderr.contains("checksum"), "\(bad)")
            let refused = try await daemon.cli(["backup", "restore", damaged, "--to", "never"])
            #expect(refused.status != 0, "\(refused)")
            let after = try await daemon.cliOK(["volume", "list"])
            #expect(!after.stdout.contains("never"), "\(after)")

            // Standard tools read the archive over NBD.
            let port = Int.random(in: 20000...40000)
            // A BackgroundProcess, not Foundation's Process: `terminate()` signals by pid, and once the
            // child is reaped that pid may be another test's process (it once stopped an nbdkit mid-walk).
            let export = try BackgroundProcess(
                TestDaemon.binary, ["backup", "export", archive, "--port", "\(port)", "--name", "img"])
            defer { export.cleanUp() }
            let copy = scratch.file("copy.raw")
            var converted: ProcessResult?
            for _ in 0..<50 {
                converted = try await runTool(
                    Tools.qemuImg, ["convert", "-f", "raw", "-O", "raw", "nbd://127.0.0.1:\(port)/img", copy])
                if converted?.status == 0 { break }
                try await Task.sleep(nanoseconds: 200_000_000)
            }
            #expect(converted?.status == 0, "\(String(describing: converted))")
            let compare = try await runTool(Tools.qemuImg, ["compare", "-f", "raw", "-F", "raw", copy, daemon.uri("r")])
            #expect(compare.status == 0, "\(compare)")

            // Streaming to standard output gives the same kind of archive.
            let streamed = scratch.file("streamed.cbk")
            let stream = try await runTool(
                "/bin/sh", ["-c", "'\(TestDaemon.binary)' backup start v --to - --data-dir '\(daemon.dataDirectory)' > '\(streamed)'"])
            #expect(stream.status == 0, "\(stream)")
            let streamVerify = try await runProcess(TestDaemon.binary, ["backup", "verify", archive, streamed])
            #expect(streamVerify.status != 0, "two full archives are not a chain: \(streamVerify)")
            let single = try await runProcess(TestDaemon.binary, ["backup", "verify", streamed])
            #expect(single.status == 0, "\(single)")
            try await daemon.cliOK(["pool", "check"])
        }
    }

    @Test("transaction consistency: whole transactions before T, none after, for each method", arguments: ["cow", "log", "mirror"])
    func bankTransactions(method: String) async throws {
        let scratch = try ScratchDirectory("bank")
        defer { scratch.remove() }
        let seed = Int.random(in: 1...1_000_000)
        try await withDaemon { daemon in
            try await daemon.cliOK(["volume", "create", "bank", "8M"])
            let log = scratch.file("log.json")
            let archive = scratch.file("bank.cbk")
            let run = try await runTool(
                Tools.python,
                [
                    Self.bank, "run", "nbd://127.0.0.1:\(daemon.nbdPort)", "bank", log, "--cairn", TestDaemon.binary,
                    "--data-dir", daemon.dataDirectory, "--archive", archive, "--method", method, "--seed", "\(seed)",
                ], timeout: 300)
            #expect(run.status == 0, "seed \(seed): \(run)")
            let out = try #require(try parseJSON(run.stdout.split(separator: "\n").last.map(String.init) ?? "") as? [String: Any])
            let id = try #require(out["backup"] as? String, "seed \(seed): \(run)")
            #expect((out["errors"] as? [Any])?.isEmpty == true, "seed \(seed): \(out)")
            let done = try await Self.waitForBackup(daemon, id)
            #expect(done["phase"] as? String == "succeeded", "seed \(seed): \(done)")
            try await daemon.cliOK(["backup", "restore", archive, "--to", "restored"])
            let backup = try await runTool(Tools.python, [Self.bank, "check", daemon.uri("restored"), log, "--mode", "backup"])
            #expect(backup.status == 0, "\(method) seed \(seed): \(backup)")
            // The run must have exercised both sides of T, with transactions in flight at the split.
            let counts = try parseJSON(backup.stdout.split(separator: "\n").last.map(String.init) ?? "") as? [String: Any]
            #expect((counts?["finished_before"] as? Int ?? 0) > 0 && (counts?["started_after"] as? Int ?? 0) > 0, "\(backup)")
            #expect((done["sessionsAtSplit"] as? Int ?? 0) > 0, "\(done)")
            let live = try await runTool(Tools.python, [Self.bank, "check", daemon.uri("bank"), log, "--mode", "live"])
            #expect(live.status == 0, "\(method) seed \(seed): \(live)")
            try await daemon.cliOK(["pool", "check"])
        }
    }

    @Test("kill -9 during the drain: the backup is abandoned, the images go, every acknowledged write stays", arguments: ["cow", "log", "mirror"])
    func killDuringDrain(method: String) async throws {
        let scratch = try ScratchDirectory("drain-crash")
        defer { scratch.remove() }
        try await withDaemon { daemon in
            try await daemon.cliOK(["volume", "create", "v", "8M"])
            let old = try await Self.holdSession(daemon, "v", scratch: scratch)
            let archive = scratch.file("v.cbk")
            let started = try Self.json(try await daemon.cliOK(["backup", "start", "v", "--to", archive, "--method", method, "--json"]))
            let id = try #require(started["id"] as? String)
            // New sessions write on B during the drain: with FUA, and without FUA followed by a FLUSH.
            try await Self.qemuIO(daemon, "v", ["write -P 0x66 1m 256k"])
            let flushed = try await runPython(
                """
                import sys, nbd
                h = nbd.NBD(); h.connect_uri(sys.argv[1])
                h.pwrite(b"\\x77" * 262144, 2 << 20)
                h.pwrite(b"\\x78" * 4096, 3 << 20)
                h.flush()
                h.shutdown()
                """, [daemon.uri("v")])
            #expect(flushed.status == 0, "\(flushed)")
            try await daemon.kill9()
            // SIGKILL: a child of the test runner may inherit a mask that blocks SIGTERM.
            old.kill()
            try await daemon.restart()
            let status = try Self.json(try await daemon.cliOK(["backup", "status", id, "--json"]))
            #expect(status["phase"] as? String == "failed", "\(status)")
            #expect((status["message"] as? String ?? "").contains("not a consistent image"), "\(status)")
            #expect(!FileManager.default.fileExists(atPath: archive) && !FileManager.default.fileExists(atPath: archive + ".partial"))
            let volumes = try await daemon.cliOK(["volume", "list"])
            #expect(!volumes.stdout.contains("backup-"), "\(volumes)")
            let snapshots = try await daemon.cliOK(["snapshot", "list"])
            #expect(!snapshots.stdout.contains("backup-"), "\(snapshots)")
            // The old session's FUA write and the new session's FUA write are both in the volume.
            let check = try await runTool(
                Tools.qemuIO,
                ["-f", "raw", daemon.uri("v"), "-c", "read -P 0x66 1m 256k", "-c", "read -P 0x77 2m 256k", "-c", "read -P 0x78 3m 4k"])
            #expect(check.status == 0 && !check.stdout.contains("verification failed"), "\(check)")
            try await daemon.cliOK(["pool", "check"])
        }
    }

    @Test("kill -9 while archiving: the archive is written again after the restart", arguments: ["cow", "log", "mirror"])
    func killDuringArchiving(method: String) async throws {
        let scratch = try ScratchDirectory("archive-crash")
        defer { scratch.remove() }
        // Archiving paced at a second per MiB (the 48 MiB take well over ten seconds, however many reader
        // threads) so the kill lands in the middle of it; the restarted daemon archives at full speed.
        try await withDaemon(extraArguments: ["--backup-archive-delay-ms", "1000"]) { daemon in
            try await daemon.cliOK(["volume", "create", "v", "64M"])
            try await Self.qemuIO(daemon, "v", ["write -P 0x77 0 48m"])
            let archive = scratch.file("v.cbk")
            let started = try Self.json(try await daemon.cliOK(["backup", "start", "v", "--to", archive, "--method", method, "--json"]))
            let id = try #require(started["id"] as? String)
            var phase = ""
            for _ in 0..<200 where phase != "archiving" {
                phase = try Self.json(try await daemon.cliOK(["backup", "status", id, "--json"]))["phase"] as? String ?? ""
                try await Task.sleep(nanoseconds: 20_000_000)
            }
            #expect(phase == "archiving")
            try await Task.sleep(nanoseconds: 500_000_000)
            try await daemon.kill9()
            #expect(!FileManager.default.fileExists(atPath: archive), "no archive file before it is complete")
            // Written writes during the restart (the recovery archives before serving).
            try await daemon.restart()
            let status = try Self.json(try await daemon.cliOK(["backup", "status", id, "--json"]))
            #expect(status["phase"] as? String == "succeeded", "\(status)")
            let verify = try await runProcess(TestDaemon.binary, ["backup", "verify", archive])
            #expect(verify.status == 0, "\(verify)")
            try await daemon.cliOK(["backup", "restore", archive, "--to", "r"])
            try await Self.qemuIO(daemon, "r", ["read -P 0x77 0 48m", "read -P 0 48m 16m"])
            let volumes = try await daemon.cliOK(["volume", "list"])
            #expect(!volumes.stdout.contains("backup-"), "\(volumes)")
            try await daemon.cliOK(["pool", "check"])
        }
    }
}

extension BackupDaemonTests {
    @Test("seal and drain timeout through the CLI; bad requests are refused with a clear error and change nothing")
    func sealTimeoutAndRefusals() async throws {
        let scratch = try ScratchDirectory("backup-cli")
        defer { scratch.remove() }
        try await withDaemon { daemon in
            try await daemon.cliOK(["volume", "create", "v", "8M"])
            let old = try await Self.holdSession(daemon, "v", scratch: scratch)
            let go = old.go
            defer {
                old.kill()
            }
            _ = go
            // Refusals: nothing is created, no backup runs.
            let missing = try await daemon.cli(["backup", "start", "nope", "--to", scratch.file("x.cbk")])
            #expect(missing.status == 3 && missing.stderr.contains("nope"), "\(missing)")
            let method = try await daemon.cli(["backup", "start", "v", "--to", scratch.file("x.cbk"), "--method", "raid"])
            // Refused by the daemon, which names the methods it knows.
            #expect(method.status != 0 && method.stderr.contains("unknown method 'raid': use mirror, log, cow"), "\(method)")
            #expect(!FileManager.default.fileExists(atPath: scratch.file("x.cbk")))
            FileManager.default.createFile(atPath: scratch.file("exists.cbk"), contents: Data("keep".utf8))
            let exists = try await daemon.cli(["backup", "start", "v", "--to", scratch.file("exists.cbk")])
            #expect(exists.status == 4 && exists.stderr.contains("never overwrites"), "\(exists)")
            #expect(try String(contentsOfFile: scratch.file("exists.cbk"), encoding: .utf8) == "keep")
            let since = try await daemon.cli(["backup", "start", "v", "--to", scratch.file("y.cbk"), "--since", scratch.file("exists.cbk")])
            #expect(since.status != 0 && since.stderr.contains("not a cairn backup archive"), "\(since)")
            let none = try await daemon.cliOK(["backup", "status", "--json"])
            #expect(none.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "[\n\n]" || none.stdout.contains("[]")
                || !none.stdout.contains("\"id\""), "\(none)")
            let snapshots = try await daemon.cliOK(["snapshot", "list"])
            #expect(!snapshots.stdout.contains("backup-"), "\(snapshots)")

            // Seal: the session still on A is reported, then moves to B.
            let sealedArchive = scratch.file("sealed.cbk")
            let started = try Self.json(try await daemon.cliOK(["backup", "start", "v", "--to", sealedArchive, "--json"]))
            let id = try #require(started["id"] as? String)
            let notDraining = try await daemon.cli(["backup", "seal", "nope"])
            #expect(notDraining.status != 0, "\(notDraining)")
            try await daemon.cliOK(["backup", "seal", id])
            let sealed = try await Self.waitForBackup(daemon, id)
            #expect(sealed["drain"] as? String == "sealed" && (sealed["sessionsLeftOnA"] as? [Any])?.count == 1, "\(sealed)")

            // Timeout: the same, after the given time.
            let timed = try Self.json(
                try await daemon.cliOK(["backup", "start", "v", "--to", scratch.file("timed.cbk"), "--drain-timeout", "1", "--json"]))
            let timedOut = try await Self.waitForBackup(daemon, try #require(timed["id"] as? String))
            #expect(timedOut["drain"] as? String == "timeout" && timedOut["phase"] as? String == "succeeded", "\(timedOut)")
            let verify = try await runProcess(TestDaemon.binary, ["backup", "verify", "--json", scratch.file("timed.cbk")])
            #expect(verify.status == 0 && verify.stdout.contains("\"drain\" : \"timeout\""), "\(verify)")
            // Both backups' T snapshots are kept as incremental bases (up to the newest four).
            let bases = try await daemon.cliOK(["snapshot", "list"])
            #expect(bases.stdout.components(separatedBy: "v@backup-").count == 3, "\(bases)")
        }
    }
}

extension BackupDaemonTests {
    @Test("kill -9 while archiving the bank: the archive written after the restart is still transaction-consistent",
          arguments: ["cow", "log", "mirror"])
    func bankKillDuringArchiving(method: String) async throws {
        let scratch = try ScratchDirectory("bank-crash")
        defer { scratch.remove() }
        let seed = Int.random(in: 1...1_000_000)
        // Two seconds per archived piece: the bank's ~20 extents take far longer than the kill below needs;
        // the restarted daemon archives at full speed.
        try await withDaemon(extraArguments: ["--backup-archive-delay-ms", "2000"]) { daemon in
            try await daemon.cliOK(["volume", "create", "bank", "8M"])
            let log = scratch.file("log.json")
            let archive = scratch.file("bank.cbk")
            let run = try await runTool(
                Tools.python,
                [
                    Self.bank, "run", "nbd://127.0.0.1:\(daemon.nbdPort)", "bank", log, "--cairn", TestDaemon.binary,
                    "--data-dir", daemon.dataDirectory, "--archive", archive, "--method", method, "--seed", "\(seed)",
                    "--after", "0.3",
                ], timeout: 300)
            let out = try #require(try parseJSON(run.stdout.split(separator: "\n").last.map(String.init) ?? "") as? [String: Any], "\(run)")
            let id = try #require(out["backup"] as? String, "seed \(seed): \(run)")
            var phase = ""
            for _ in 0..<300 where phase != "archiving" {
                phase = try Self.json(try await daemon.cliOK(["backup", "status", id, "--json"]))["phase"] as? String ?? ""
                try await Task.sleep(nanoseconds: 20_000_000)
            }
            #expect(phase == "archiving", "seed \(seed)")
            try await daemon.kill9()
            try await daemon.restart()
            let status = try Self.json(try await daemon.cliOK(["backup", "status", id, "--json"]))
            #expect(status["phase"] as? String == "succeeded", "seed \(seed): \(status)")
            #expect((status["message"] as? String ?? "").contains("after a daemon restart"), "seed \(seed): \(status)")
            try await daemon.cliOK(["backup", "restore", archive, "--to", "restored"])
            let backup = try await runTool(Tools.python, [Self.bank, "check", daemon.uri("restored"), log, "--mode", "backup"])
            #expect(backup.status == 0, "\(method) seed \(seed): \(backup)")
            let live = try await runTool(Tools.python, [Self.bank, "check", daemon.uri("bank"), log, "--mode", "live"])
            #expect(live.status == 0, "\(method) seed \(seed): \(live)")
            try await daemon.cliOK(["pool", "check"])
        }
    }
}
