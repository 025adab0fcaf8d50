import Foundation
import InteropSupport
import Testing

/// `cairn serve --config FILE` (YAML) and `--check-config`, driven like an operator would.
@Suite("cairn serve configuration file")
struct ConfigFileDaemonTests {
    static func checkConfig(_ file: String, _ extra: [String] = []) async throws -> ProcessResult {
        try await runTool(TestDaemon.binary, ["serve", "--config", file, "--check-config"] + extra)
    }

    @Test("--check-config prints the merged settings; flags override the file; mistakes exit 64 with where and what")
    func checkConfig() async throws {
        let scratch = try ScratchDirectory("config")
        defer { scratch.remove() }
        let good = scratch.file("good.yaml")
        try """
            # a comment
            data_dir: \(scratch.path)/pool
            nbd: {host: 127.0.0.1, port: 10900}
            api: {port: 7811, token_file: \(scratch.path)/token}
            io: {threads: 2}
            log: {level: debug}
            """.write(toFile: good, atomically: true, encoding: .utf8)
        let checked = try await Self.checkConfig(good)
        #expect(checked.status == 0, "\(checked)")
        for line in [
            "data directory  \(scratch.path)/pool", "nbd             127.0.0.1:10900",
            "api             http://127.0.0.1:7811 (token: \(scratch.path)/token)", "io threads      2",
            "log level       debug", "configuration OK",
        ] {
            #expect(checked.stdout.contains(line), "missing '\(line)' in \(checked.stdout)")
        }
        // Validating starts nothing and creates nothing.
        #expect(!FileManager.default.fileExists(atPath: scratch.path + "/pool"))
        let overridden = try await Self.checkConfig(good, ["--nbd-port", "0", "--api-socket", scratch.path + "/s.sock"])
        #expect(overridden.stdout.contains("nbd             127.0.0.1:0"), "\(overridden)")
        #expect(overridden.stdout.contains("api             unix:\(scratch.path)/s.sock"), "\(overridden)")

        // NBD timeouts: defaults (no idle timeout, 60 s of progress), from the file, a flag over it.
        #expect(checked.stdout.contains("nbd timeouts    idle off, progress 60.0 seconds"), "\(checked.stdout)")
        let timeouts = scratch.file("timeouts.yaml")
        try "nbd: {idle_timeout: 300, progress_timeout: 0}\n".write(toFile: timeouts, atomically: true, encoding: .utf8)
        let timed = try await Self.checkConfig(timeouts, ["--nbd-progress-timeout", "15"])
        #expect(timed.stdout.contains("nbd timeouts    idle 300.0 seconds, progress 15.0 seconds"), "\(timed)")
        let untimed = try await Self.checkConfig(timeouts)
        #expect(untimed.stdout.contains("nbd timeouts    idle 300.0 seconds, progress off"), "\(untimed)")

        // Remote mirroring from the file; a flag overrides one value.
        try "a-shared-secret-of-some-length".write(toFile: scratch.file("secret"), atomically: true, encoding: .utf8)
        let mirroring = scratch.file("mirror.yaml")
        try """
            replication: {port: 10950, secret_file: \(scratch.file("secret")), timeout_ms: 2000, retries: 4}
            """.write(toFile: mirroring, atomically: true, encoding: .utf8)
        let replicated = try await Self.checkConfig(mirroring, ["--mirror-retries", "1"])
        #expect(
            replicated.status == 0 && replicated.stdout.contains(":10950")
                && replicated.stdout.contains("secret \(scratch.file("secret"))")
                && replicated.stdout.contains("2000 ms × 2 tries"), "\(replicated)")

        let mistakes: [(String, String)] = [
            ("nbd:\n  prot: 1\n", "nbd.prot: unknown key"),
            ("nbd: {port: lots}\n", "nbd.port: expected a number"),
            ("nbd: {port: 70000}\n", "NBD port must be 0...65535"),
            ("io: {threads: 0}\n", "I/O threads must be 1...256"),
            ("log: {level: loud}\n", "unknown log level 'loud'"),
            ("api: {port: 7000, socket: /tmp/x.sock}\n", "not both"),
            ("nbd: [1, 2\n", "not valid YAML"),
            ("colour: blue\n", "colour: unknown key"),
            ("replication: {port: 10950}\n", "needs --replication-secret-file"),
            ("replication: {secret: x}\n", "replication.secret: unknown key"),
            ("nbd: {idle_timeout: -1}\n", "NBD idle timeout must be 0...86400 seconds"),
            ("nbd: {progress_timeout: forever}\n", "nbd.progress_timeout"),
        ]
        for (text, message) in mistakes {
            let file = scratch.file("bad.yaml")
            try text.write(toFile: file, atomically: true, encoding: .utf8)
            let result = try await Self.checkConfig(file)
            #expect(result.status == 64 && result.stderr.contains(message), "\(text.debugDescription): \(result)")
        }
        let missing = try await Self.checkConfig(scratch.path + "/nowhere.yaml")
        #expect(missing.status == 64 && missing.stderr.contains("cannot read"), "\(missing)")
    }

    @Test("a daemon started from a configuration file serves with its settings")
    func serveFromFile() async throws {
        let scratch = try ScratchDirectory("config-serve")
        defer { scratch.remove() }
        let file = scratch.file("cairn.yaml")
        // The test harness passes --data-dir, --nbd-port 0 and --log-level as flags; the file sets the rest.
        try "io: {threads: 3}\nlog: {level: debug}\n".write(toFile: file, atomically: true, encoding: .utf8)
        try await withDaemon(extraArguments: ["--config", file]) { daemon in
            try await daemon.createVolume("c", "4M")
            try await daemon.qemuIOOK("c", ["write -P 0x3c 0 1m", "flush", "read -P 0x3c 0 1m"])
            // Three I/O threads, as the file says (the default is 4); they name themselves cairn-io-N.
            let tasks = "/proc/\(daemon.process.processIdentifier)/task"
            let names = try FileManager.default.contentsOfDirectory(atPath: tasks).compactMap {
                try? String(contentsOfFile: "\(tasks)/\($0)/comm", encoding: .utf8)
            }
            #expect(names.filter { $0.hasPrefix("cairn-io-") }.count == 3, "\(names)")
            // The flag won over the file's debug level.
            #expect(!daemon.log.contains(" debug "), "\(daemon.log.suffix(2000))")
        }
    }
}
