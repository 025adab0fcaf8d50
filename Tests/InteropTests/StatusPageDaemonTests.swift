import Foundation
import Glibc
import InteropSupport
import Testing

/// The status page as a person sees it: loaded by a real browser (headless Chromium from Debian) from a
/// daemon whose API is on TCP, getting in with the token once and by cookie afterwards.
@Suite("status page in a real browser")
struct StatusPageDaemonTests {
    /// Headless Chromium with its own profile (the cookie lives there between loads).
    struct Browser {
        let profile: String

        func run(_ arguments: [String]) async throws -> ProcessResult {
            try await runTool(
                MoreTools.chromium,
                [
                    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars",
                    "--user-data-dir=\(profile)",
                ] + arguments, timeout: 120)
        }

        /// The DOM after the page loaded (redirects and cookies followed).
        func dom(_ url: String) async throws -> String {
            let result = try await run(["--dump-dom", url])
            try #require(result.status == 0, "chromium: \(result)")
            return result.stdout
        }
    }

    @Test("pool, snapshot tree, clones, a running job and recent errors appear; token once, then the cookie; nothing without")
    func statusPage() async throws {
        let directory = TestDaemon.makeDataDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let scratch = try ScratchDirectory("status")
        defer { scratch.remove() }
        let port = try APITokenDaemonTests.freePort()
        // Slow clone copies keep a sync job running while the page loads.
        let daemon = try await APITokenDaemonTests.start(
            directory, port: port, extra: ["--clone-extent-delay-ms", "2000"])
        defer {
            daemon.signal(SIGTERM)
            daemon.cleanUp()
        }
        let token = try String(contentsOfFile: directory + "/api.token", encoding: .utf8)
            .trimmingCharacters(in: .whitespacesAndNewlines)
        let api = "http://127.0.0.1:\(port)"
        func cli(_ arguments: [String]) async throws {
            let result = try await runTool(TestDaemon.binary, arguments + ["--api", api, "--api-token", token])
            try #require(result.status == 0, "cairn \(arguments): \(result)")
        }
        try await cli(["volume", "create", "vm1", "64M"])
        try await cli(["snapshot", "create", "vm1@daily"])
        try await cli(["volume", "clone", "vm1@daily", "vm1-test"])
        try await cli(["volume", "create", "db", "32M"])
        let nbd = try parseJSON(String(contentsOfFile: directory + "/daemon.json", encoding: .utf8)) as? [String: Any]
        let nbdAddress = try #require(nbd?["nbd"] as? String, "daemon.json: \(String(describing: nbd))")
        let nbdPort = try #require(nbdAddress.split(separator: ":").last.flatMap { Int($0) }, "\(nbdAddress)")
        // Data in db so that its clone has extents to copy (one every 2 s).
        let write = try await runTool(
            Tools.qemuIO, ["-f", "raw", "-c", "write -P 0x5c 0 16m", "nbd://127.0.0.1:\(nbdPort)/db"])
        try #require(write.status == 0, "\(write)")
        try await cli(["clone", "add", "db", "--name", "db-copy"])
        // A client breaking the protocol: the daemon logs a warning, the page lists it.
        let rude = try await runPython(
            """
            import socket, sys
            s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
            s.recv(18)
            s.sendall((1).to_bytes(4, "big") + b"NOTMAGIC" + bytes(8))
            s.recv(100)
            """, ["\(nbdPort)"])
        #expect(rude.status == 0 || rude.status == 1, "\(rude)")

        let browser = Browser(profile: scratch.file("profile"))
        // Without the token: refused, and the body says how to get in.
        let refused = try await browser.dom(api + "/status")
        #expect(refused.contains("unauthorized") && !refused.contains("vm1"), "\(refused)")
        let wrong = try await browser.dom(api + "/status?token=not-the-token")
        #expect(wrong.contains("unauthorized") && !wrong.contains("vm1"), "\(wrong)")

        let page = try await browser.dom(api + "/status?token=\(token)")
        #expect(page.contains(#"<meta http-equiv="refresh" content="5">"#), "the page does not refresh itself")
        for fragment in [
            #"id="pool""#, #"data-volume="vm1""#, #"data-snapshot="vm1@daily""#, #"data-volume="vm1-test""#,
            #"data-clone="db-copy""#, #"id="clones""#, "synchronizing", #"data-job="#, "clone-synchronizing",
            "NBD protocol violation",
        ] {
            #expect(page.contains(fragment), "missing \(fragment) in\n\(page)")
        }
        // vm1-test hangs under vm1@daily (a clone of that snapshot), not at the top level.
        if let snapshot = page.range(of: #"data-snapshot="vm1@daily""#), let test = page.range(of: #"data-volume="vm1-test""#) {
            let between = snapshot.upperBound < test.lowerBound ? page[snapshot.upperBound..<test.lowerBound] : ""
            #expect(between.contains("<ul>") && !between.contains("data-volume="), "vm1-test is not under vm1@daily")
        }

        // Later loads get in by the cookie alone and show what changed.
        try await cli(["volume", "create", "later", "8M"])
        let again = try await browser.dom(api + "/status")
        #expect(again.contains(#"data-volume="later""#), "\(again)")
        // The cookie opens the page and nothing else.
        let cookieOnly = try await browser.dom(api + "/v1/volumes")
        #expect(cookieOnly.contains("unauthorized"), "\(cookieOnly)")

        let screenshot = scratch.file("status.png")
        let shot = try await browser.run(["--window-size=1280,900", "--screenshot=\(screenshot)", api + "/status"])
        let png = FileManager.default.contents(atPath: screenshot) ?? Data()
        #expect(shot.status == 0 && png.count > 10_000 && png.starts(with: [0x89, 0x50, 0x4E, 0x47]), "\(shot)")
        if let keep = ProcessInfo.processInfo.environment["CAIRN_STATUS_SCREENSHOT"] {
            try? FileManager.default.removeItem(atPath: keep)
            try FileManager.default.copyItem(atPath: screenshot, toPath: keep)
        }
    }
}
