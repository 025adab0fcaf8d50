import Foundation
import Glibc
import InteropSupport
import Testing

/// The management API on a loopback TCP port (`--api-port`) answers only callers presenting its token.
@Suite("management API on TCP")
struct APITokenDaemonTests {
    /// A loopback port for `--api-port` (`LoopbackPort`).
    static func freePort() throws -> Int { LoopbackPort.free() }

    /// Starts `cairn serve --api-port PORT`; returns the process once daemon.json is written.
    static func start(_ directory: String, port: Int, extra: [String] = []) async throws -> BackgroundProcess {
        let daemon = try BackgroundProcess(
            TestDaemon.binary,
            ["serve", "--data-dir", directory, "--nbd-port", "0", "--api-port", "\(port)"] + extra)
        let ready = try await poll(timeout: 60) {
            FileManager.default.fileExists(atPath: directory + "/daemon.json") || !daemon.isRunning
        }
        try #require(ready, "cairn serve did not start: \(daemon.summary)")
        // daemon.json is written before the API listener is up: wait until it answers at all.
        let listening = try await poll(timeout: 60) {
            try await Self.get("http://127.0.0.1:\(port)/v1/health", token: nil).status != "000" || !daemon.isRunning
        }
        try #require(listening && daemon.isRunning, "the API did not come up: \(daemon.summary)")
        return daemon
    }

    /// curl's body and HTTP status for GET `path`, with an optional bearer token.
    static func get(_ url: String, token: String?) async throws -> (body: String, status: String) {
        var arguments = ["-s", "-w", "\n%{http_code}", url]
        if let token { arguments += ["-H", "Authorization: Bearer \(token)"] }
        let result = try await runTool("/usr/bin/curl", arguments)
        let lines = result.stdout.split(separator: "\n", omittingEmptySubsequences: false)
        return (lines.dropLast().joined(separator: "\n"), String(lines.last ?? ""))
    }

    @Test("no token or a wrong one: 401 and nothing done; the token file is 0600; the CLI finds the token")
    func tokenRequired() async throws {
        let directory = TestDaemon.makeDataDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let port = try Self.freePort()
        let daemon = try await Self.start(directory, port: port)
        defer {
            daemon.signal(SIGTERM)
            daemon.cleanUp()
        }
        try #require(daemon.isRunning, "\(daemon.summary)")
        let api = "http://127.0.0.1:\(port)"

        for token in [nil, "wrong-token-wrong-token-wrong-token"] {
            for path in ["/v1/pool", "/v1/volumes", "/metrics"] {
                let answer = try await Self.get(api + path, token: token)
                #expect(answer.status == "401" && answer.body.contains("\"unauthorized\""), "\(path): \(answer)")
            }
        }
        let tokenFile = directory + "/api.token"
        let mode = (try? FileManager.default.attributesOfItem(atPath: tokenFile))?[.posixPermissions] as? Int
        #expect(mode == 0o600, "mode \(String(mode ?? -1, radix: 8))")
        let token = try String(contentsOfFile: tokenFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(token.count == 64)
        let answer = try await Self.get(api + "/v1/pool", token: token)
        #expect(answer.status == "200" && answer.body.contains("\"poolID\""), "\(answer)")

        // The CLI reads api.token from the data directory, or takes --api-token / CAIRN_API_TOKEN.
        let created = try await runTool(
            TestDaemon.binary, ["volume", "create", "t", "1M", "--api", api, "--data-dir", directory])
        #expect(created.status == 0, "\(created)")
        let elsewhere = TestDaemon.makeDataDirectory()
        defer { try? FileManager.default.removeItem(atPath: elsewhere) }
        let refused = try await runTool(
            TestDaemon.binary, ["volume", "create", "u", "1M", "--api", api, "--data-dir", elsewhere])
        #expect(refused.status == 77 && refused.stderr.contains("token"), "\(refused)")
        let wrong = try await runTool(
            TestDaemon.binary, ["volume", "list", "--api", api, "--data-dir", elsewhere, "--api-token", "x" + token])
        #expect(wrong.status == 77, "\(wrong)")
        let viaEnvironment = try await runTool(
            TestDaemon.binary, ["volume", "list", "--json", "--api", api, "--data-dir", elsewhere],
            environment: ["CAIRN_API_TOKEN": token])
        #expect(viaEnvironment.status == 0 && viaEnvironment.stdout.contains("\"t\""), "\(viaEnvironment)")
        // Nothing the refused calls asked for happened.
        #expect(!viaEnvironment.stdout.contains("\"u\""), "\(viaEnvironment)")
    }

    @Test("a token file with a guessable token stops the daemon at start, with the reason")
    func weakTokenRefused() async throws {
        let directory = TestDaemon.makeDataDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let tokenFile = directory + "/given.token"
        try "short\n".write(toFile: tokenFile, atomically: true, encoding: .utf8)
        let daemon = try BackgroundProcess(
            TestDaemon.binary,
            [
                "serve", "--data-dir", directory, "--nbd-port", "0", "--api-port", "\(try Self.freePort())",
                "--api-token-file", tokenFile,
            ])
        defer { daemon.cleanUp() }
        let status = try await daemon.wait(timeout: 60)
        #expect(status != nil && status != 0, "\(daemon.summary)")
        #expect(daemon.stderr.contains("at least 16"), "\(daemon.summary)")
    }
}
