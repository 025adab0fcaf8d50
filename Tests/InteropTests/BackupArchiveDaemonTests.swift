import Foundation
import InteropSupport
import Testing

/// Backups in /metrics, `--since` any retained earlier backup, and `cairn backup export` over TLS, through
/// the real daemon and real clients (curl, qemu-io, qemu-img, nbdinfo).
extension BackupDaemonTests {
    @Test("/metrics shows a backup draining with its session on A, then its archive, and counts it")
    func backupMetrics() async throws {
        let scratch = try ScratchDirectory("backup-metrics")
        defer { scratch.remove() }
        try await withDaemon { daemon in
            try await daemon.cliOK(["volume", "create", "v", "16M"])
            try await Self.qemuIO(daemon, "v", ["write -P 0x21 0 8m"])
            let before = try await daemon.scrapeMetrics()
            #expect(MetricsText.sample(before, "cairn_backups_total", ["result=\"succeeded\""]) == 0, "\(before)")
            let old = try await Self.holdSession(daemon, "v", scratch: scratch)
            let go = old.go
            let started = try Self.json(
                try await daemon.cliOK(["backup", "start", "v", "--to", scratch.file("v.cbk"), "--json"]))
            let id = try #require(started["id"] as? String)
            let backup = "backup=\"\(id)\""
            let during = try await daemon.scrapeMetrics()
            #expect(MetricsText.sample(during, "cairn_backup_phase", [backup, "phase=\"draining\""]) == 1, "\(during)")
            #expect(MetricsText.sample(during, "cairn_backup_phase", [backup, "phase=\"succeeded\""]) == 0, "\(during)")
            #expect(MetricsText.sample(during, "cairn_backup_sessions_on_a", [backup, "volume=\"v\""]) == 1, "\(during)")
            #expect(MetricsText.sample(during, "cairn_backup_archived_bytes", [backup]) == 0, "\(during)")
            _ = FileManager.default.createFile(atPath: go, contents: nil)
            old.process.waitUntilExit()
            let done = try await Self.waitForBackup(daemon, id)
            #expect(done["phase"] as? String == "succeeded", "\(done)")
            let after = try await daemon.scrapeMetrics()
            #expect(MetricsText.sample(after, "cairn_backup_phase", [backup, "phase=\"succeeded\""]) == 1, "\(after)")
            #expect(MetricsText.sample(after, "cairn_backup_sessions_on_a", [backup]) == 0, "\(after)")
            let dataBytes = try #require(done["dataBytes"] as? Int)
            #expect(dataBytes >= 8 << 20)
            #expect(MetricsText.sample(after, "cairn_backup_archived_bytes", [backup]) == Double(dataBytes), "\(after)")
            #expect((MetricsText.sample(after, "cairn_backup_archive_duration_seconds", [backup]) ?? 0) > 0, "\(after)")
            #expect((MetricsText.sample(after, "cairn_backup_archive_throughput_bytes_per_second", [backup]) ?? 0) > 0, "\(after)")
            #expect(MetricsText.sample(after, "cairn_backups_total", ["result=\"succeeded\""]) == 1, "\(after)")
            #expect(MetricsText.sample(after, "cairn_backups_total", ["result=\"failed\""]) == 0, "\(after)")
        }
    }

    @Test("--since any retained earlier backup: differentials and increments of increments restore; stale bases are refused")
    func sinceAnyEarlierBackup() async throws {
        let scratch = try ScratchDirectory("backup-since")
        defer { scratch.remove() }
        try await withDaemon { daemon in
            try await daemon.cliOK(["volume", "create", "v", "8M"])
            func backup(_ name: String, since: String? = nil) async throws -> [String: Any] {
                var arguments = ["backup", "start", "v", "--to", scratch.file(name + ".cbk"), "--json"]
                if let since { arguments += ["--since", scratch.file(since + ".cbk")] }
                let started = try Self.json(try await daemon.cliOK(arguments))
                let done = try await Self.waitForBackup(daemon, try #require(started["id"] as? String))
                #expect(done["phase"] as? String == "succeeded", "\(name): \(done)")
                return done
            }
            try await Self.qemuIO(daemon, "v", ["write -P 0x01 0 4m"])
            _ = try await backup("full")
            try await Self.qemuIO(daemon, "v", ["write -P 0x02 4m 1m"])
            _ = try await backup("inc1", since: "full")
            try await Self.qemuIO(daemon, "v", ["write -P 0x03 5m 1m"])
            // Against the full, although inc1 is newer: carries both megabytes written since the full.
            let diff = try await backup("diff", since: "full")
            #expect((diff["dataBytes"] as? Int ?? 0) == 2 << 20, "\(diff)")
            try await Self.qemuIO(daemon, "v", ["write -P 0x04 6m 1m"])
            let inc2 = try await backup("inc2", since: "inc1")
            #expect((inc2["dataBytes"] as? Int ?? 0) == 2 << 20, "\(inc2)")

            try await daemon.cliOK(["backup", "restore", scratch.file("full.cbk"), scratch.file("diff.cbk"), "--to", "d"])
            try await Self.qemuIO(daemon, "d", ["read -P 0x01 0 4m", "read -P 0x02 4m 1m", "read -P 0x03 5m 1m", "read -P 0 6m 2m"])
            try await daemon.cliOK([
                "backup", "restore", scratch.file("full.cbk"), scratch.file("inc1.cbk"), scratch.file("inc2.cbk"), "--to", "i",
            ])
            try await Self.qemuIO(daemon, "i", ["read -P 0x01 0 4m", "read -P 0x02 4m 1m", "read -P 0x03 5m 1m", "read -P 0x04 6m 1m"])
            // Two increments of the same base are not a chain: refused, nothing created.
            let broken = try await daemon.cli([
                "backup", "restore", scratch.file("full.cbk"), scratch.file("inc1.cbk"), scratch.file("diff.cbk"), "--to", "x",
            ])
            #expect(broken.status != 0 && broken.stderr.contains("base"), "\(broken)")
            let verify = try await runProcess(
                TestDaemon.binary, ["backup", "verify", scratch.file("full.cbk"), scratch.file("inc2.cbk")])
            #expect(verify.status != 0 && verify.stderr.contains("missing"), "\(verify)")

            // Four more backups: the full is no longer a base. Refused with what to do; nothing starts.
            var previous = "inc2"
            for index in 0..<4 {
                try await Self.qemuIO(daemon, "v", ["write -P 0x\(index + 5)0 \(index)m 4k"])
                _ = try await backup("later\(index)", since: previous)
                previous = "later\(index)"
            }
            let stale = try await daemon.cli(["backup", "start", "v", "--to", scratch.file("stale.cbk"), "--since", scratch.file("full.cbk")])
            #expect(stale.status != 0 && stale.stderr.contains("is gone") && stale.stderr.contains("full backup"), "\(stale)")
            #expect(!FileManager.default.fileExists(atPath: scratch.file("stale.cbk")))
            let snapshots = try await daemon.cliOK(["snapshot", "list"])
            #expect(snapshots.stdout.components(separatedBy: "v@backup-").count == 5, "\(snapshots)")
            _ = try await backup("fromOldest", since: "later0")
            try await daemon.cliOK(["pool", "check"])
        }
    }

    /// Starts `cairn backup export` on a free port and waits until `probe` (an nbdinfo URI) answers.
    /// Signals go through `BackgroundProcess` (a pidfd): Foundation's `Process.terminate()` signals by pid,
    /// which after the child was reaped may name another test's process.
    static func startExport(_ arguments: [String], probe: (Int) -> [String]) async throws -> (BackgroundProcess, Int) {
        for _ in 0..<5 {
            let port = Int.random(in: 20000...40000)
            let export = try BackgroundProcess(TestDaemon.binary, ["backup", "export"] + arguments + ["--port", "\(port)"])
            for _ in 0..<50 {
                if try await runTool(Tools.nbdinfo, ["--size"] + probe(port)).status == 0 { return (export, port) }
                guard export.isRunning else { break }
                try await Task.sleep(nanoseconds: 100_000_000)
            }
            export.cleanUp()
        }
        throw TestDaemonError("cairn backup export did not start")
    }

    @Test("backup export over TLS: nbdinfo and qemu-img read the archive with X.509 or a PSK; plaintext and bad flags are refused")
    func exportOverTLS() async throws {
        let scratch = try ScratchDirectory("backup-export-tls")
        defer { scratch.remove() }
        let certificates = try await TLSDaemonTests.Certificates(in: scratch)
        let keys = try await runTool(
            "/bin/sh",
            ["-c", "cd \"$1\" && mkdir alice && echo \"alice:$(openssl rand -hex 32)\" > alice/keys.psk", "sh", scratch.path])
        try #require(keys.status == 0, "\(keys)")
        try await withDaemon { daemon in
            try await daemon.cliOK(["volume", "create", "v", "8M"])
            try await Self.qemuIO(daemon, "v", ["write -P 0x5c 1m 2m"])
            let archive = scratch.file("v.cbk")
            let started = try Self.json(try await daemon.cliOK(["backup", "start", "v", "--to", archive, "--json"]))
            _ = try await Self.waitForBackup(daemon, try #require(started["id"] as? String))
            let raw = scratch.file("v.raw")
            try await daemon.cliOK(["backup", "restore", archive, "--to", "r"])
            let reference = try await runTool(Tools.qemuImg, ["convert", "-f", "raw", "-O", "raw", daemon.uri("r"), raw])
            #expect(reference.status == 0, "\(reference)")

            // X.509: the server's certificate and key, as `cairn serve --tls-cert/--tls-key` takes them.
            func x509(_ port: Int) -> [String] {
                ["nbds://127.0.0.1:\(port)/img?tls-certificates=\(certificates.clientOnlyCA)"]
            }
            let (server, port) = try await Self.startExport(
                [archive, "--name", "img", "--tls-cert", certificates.serverCert, "--tls-key", certificates.serverKey],
                probe: x509)
            defer { server.cleanUp() }
            let info = try await runTool(Tools.nbdinfo, x509(port))
            #expect(info.status == 0 && info.stdout.contains("is_read_only: true"), "\(info)")
            let plain = try await runTool(Tools.nbdinfo, ["nbd://127.0.0.1:\(port)/img"])
            #expect(plain.status != 0, "a plaintext client is refused: \(plain)")
            let copy = scratch.file("copy.raw")
            let converted = try await runTool(
                Tools.qemuImg,
                [
                    "convert", "--object", "tls-creds-x509,id=tls0,dir=\(certificates.clientOnlyCA),endpoint=client",
                    "--image-opts", "driver=nbd,host=127.0.0.1,port=\(port),export=img,tls-creds=tls0", "-O", "raw", copy,
                ])
            #expect(converted.status == 0, "\(converted)")
            let compare = try await runTool(Tools.qemuImg, ["compare", "-f", "raw", "-F", "raw", copy, raw])
            #expect(compare.status == 0, "\(compare)")

            // Pre-shared keys: the psktool file `cairn serve --tls-psk-file` takes.
            func psk(_ port: Int) -> [String] {
                ["nbds://alice@127.0.0.1:\(port)/img?tls-psk-file=\(scratch.file("alice/keys.psk"))"]
            }
            let (pskServer, pskPort) = try await Self.startExport(
                [archive, "--name", "img", "--tls-psk-file", scratch.file("alice/keys.psk")], probe: psk)
            defer { pskServer.cleanUp() }
            let pskCopy = scratch.file("psk.raw")
            let pskConverted = try await runTool(Tools.nbdcopy, psk(pskPort) + [pskCopy])
            #expect(pskConverted.status == 0, "\(pskConverted)")
            let pskCompare = try await runTool(Tools.qemuImg, ["compare", "-f", "raw", "-F", "raw", pskCopy, raw])
            #expect(pskCompare.status == 0, "\(pskCompare)")

            // Bad TLS flags: refused before anything listens, with the flag to fix.
            for (arguments, says) in [
                (["--tls", "required"], "--tls-cert"),
                (["--tls-psk-file", scratch.file("alice/keys.psk"), "--tls-cert", certificates.serverCert], "not both"),
                (["--tls", "sometimes", "--tls-psk-file", scratch.file("alice/keys.psk")], "unknown TLS mode"),
                (["--tls-cert", certificates.serverCert, "--tls-key", scratch.file("missing.pem")], "cannot read"),
            ] {
                let refused = try await runProcess(
                    TestDaemon.binary, ["backup", "export", archive, "--port", "0"] + arguments)
                #expect(refused.status != 0 && refused.stderr.contains(says), "\(arguments): \(refused)")
            }
        }
    }
}
