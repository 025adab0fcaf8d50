import Foundation
import Glibc

/// A real `cairn serve` process on its own data directory and a free NBD port, for interop tests.
/// Start it from the test itself and stop it by PID (a server started with `&` by a shell may be killed
/// with that shell).
public final class TestDaemon: @unchecked Sendable {
    // @unchecked: `process` is only replaced by `restart`, which tests call from one task.
    public let dataDirectory: String
    public private(set) var process: Process
    /// Signals to the daemon go through this, never through its pid (see `ProcessHandle`).
    private var handle: ProcessHandle
    public private(set) var nbdPort: Int
    public let logPath: String

    /// The `cairn` binary under test: $CAIRN_BIN (set by scripts/test) or the debug build.
    public static let binary: String = {
        if let path = ProcessInfo.processInfo.environment["CAIRN_BIN"] { return path }
        return Tools.packageRoot + "/.build/debug/cairn"
    }()

    /// How long a daemon may take to start listening before the test fails. The suite starts dozens of
    /// daemons at once (Swift Testing runs suites in parallel), so on a loaded machine with few cores the
    /// first ones can take a minute; three mean "broken", not "slow".
    static let startTimeout: Double = 180

    /// Starts a daemon on a fresh data directory (or `dataDirectory`, to reopen a pool). Its log goes beside
    /// the data directory, or to `logPath`: a test whose filesystem fails must keep the log elsewhere.
    public init(dataDirectory: String? = nil, logPath: String? = nil, extraArguments: [String] = []) async throws {
        let directory = dataDirectory ?? Self.makeDataDirectory()
        self.dataDirectory = directory
        self.logPath = logPath ?? directory + ".log"
        (process, handle, nbdPort) = try await Self.launch(directory: directory, logPath: self.logPath, extra: extraArguments)
    }

    /// A short path under /tmp: unix socket paths must stay under 108 bytes.
    public static func makeDataDirectory() -> String {
        var template = Array("/tmp/cairn-it-XXXXXX".utf8CString)
        let path = template.withUnsafeMutableBufferPointer { buffer -> String in
            guard let result = mkdtemp(buffer.baseAddress!) else { fatalError("mkdtemp failed") }
            return String(cString: result)
        }
        return path
    }

    private static func launch(directory: String, logPath: String, extra: [String]) async throws -> (
        Process, ProcessHandle, Int
    ) {
        let runtime = directory + "/daemon.json"
        unlink(runtime)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        // --exit-with-parent: a test run that crashes or is killed leaves no daemon behind.
        process.arguments =
            ["serve", "--data-dir", directory, "--nbd-port", "0", "--log-level", "info", "--exit-with-parent"] + extra
        FileManager.default.createFile(atPath: logPath, contents: nil)
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
        log.seekToEndOfFile()
        process.standardOutput = log
        process.standardError = log
        process.standardInput = FileHandle.nullDevice
        try process.run()
        let handle = ProcessHandle(pid: process.processIdentifier, executable: process.executableURL!.path)
        let deadline = Date().addingTimeInterval(startTimeout)
        // The runtime file is looked at once more after the deadline: a test task the machine starved past
        // it must not call a daemon that did start "not started".
        while true {
            if let data = FileManager.default.contents(atPath: runtime),
                let info = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
                let nbd = info["nbd"] as? String, let port = Int(nbd.split(separator: ":").last ?? ""),
                FileManager.default.fileExists(atPath: directory + "/cairn.sock")
            {
                return (process, handle, port)
            }
            if !process.isRunning {
                let output = (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
                throw TestDaemonError("cairn serve exited with status \(process.terminationStatus):\n\(output)")
            }
            if Date() >= deadline { break }
            try await Task.sleep(nanoseconds: 20_000_000)
        }
        handle.signal(SIGKILL)
        throw TestDaemonError("cairn serve did not start within \(startTimeout) s")
    }

    /// nbd://127.0.0.1:PORT/NAME
    public func uri(_ export: String) -> String { "nbd://127.0.0.1:\(nbdPort)/\(export)" }

    /// Runs `cairn ARGS --data-dir DIR` (a client command against this daemon).
    public func cli(_ arguments: [String], timeout: Double = 120) async throws -> ProcessResult {
        try await runProcess(Self.binary, arguments + ["--data-dir", dataDirectory], timeout: timeout)
    }

    /// Runs a client command and fails with its output unless it exits 0.
    @discardableResult
    public func cliOK(_ arguments: [String]) async throws -> ProcessResult {
        let result = try await cli(arguments)
        guard result.status == 0 else { throw TestDaemonError("cairn \(arguments.joined(separator: " ")): \(result)") }
        return result
    }

    /// Sends `signal` to the daemon (if it is still the process this object started).
    public func signal(_ signal: Int32) { handle.signal(signal) }

    /// SIGTERM and wait: the graceful path (sessions drain, the pool commits).
    public func stop() async throws {
        guard process.isRunning else { return }
        handle.signal(SIGTERM)
        try await waitForExit(timeout: 30)
    }

    /// SIGKILL: the process dies wherever it is, nothing is committed.
    public func kill9() async throws {
        guard process.isRunning else { return }
        handle.signal(SIGKILL)
        try await waitForExit(timeout: 30)
    }

    /// Starts a new daemon on the same pool (after `stop` or `kill9`).
    public func restart(extraArguments: [String] = []) async throws {
        (process, handle, nbdPort) = try await Self.launch(
            directory: dataDirectory, logPath: logPath, extra: extraArguments)
    }

    private func waitForExit(timeout: Double) async throws {
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning {
            guard Date() < deadline else { throw TestDaemonError("cairn serve did not exit within \(timeout) s") }
            try await Task.sleep(nanoseconds: 10_000_000)
        }
    }

    /// Stops the daemon if needed and removes its data directory.
    public func destroy() async {
        if process.isRunning {
            handle.signal(SIGKILL)
            process.waitUntilExit()
        }
        try? FileManager.default.removeItem(atPath: dataDirectory)
        try? FileManager.default.removeItem(atPath: logPath)
    }

    /// The daemon's log so far (for failure messages).
    public var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }
}

public struct TestDaemonError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// Runs `body` with a fresh daemon, always destroying it afterwards.
public func withDaemon<T>(
    extraArguments: [String] = [], _ body: (TestDaemon) async throws -> T
) async throws -> T {
    let daemon = try await TestDaemon(extraArguments: extraArguments)
    do {
        let result = try await body(daemon)
        await daemon.destroy()
        return result
    } catch {
        let log = daemon.log
        await daemon.destroy()
        throw TestDaemonError("\(error)\n--- daemon log\n\(log)")
    }
}
