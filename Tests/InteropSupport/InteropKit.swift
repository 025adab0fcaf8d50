import Foundation
import Glibc

// Shared helpers for the daemon-level interop suites: seeds, scratch directories, long-running client
// processes, JSON from tools, polling and disk usage. Foundation only, like the rest of InteropSupport.

/// The seed of a randomized test: $CAIRN_SEED when set (to replay a failure), else a fresh one. Tests
/// print it in every failure message.
public enum TestSeed {
    public static func make() -> UInt64 {
        if let text = ProcessInfo.processInfo.environment["CAIRN_SEED"], let value = UInt64(text) { return value }
        return UInt64.random(in: 1...UInt64(UInt32.max))
    }
}

/// SplitMix64: small, fast and reproducible from a seed (SystemRandomNumberGenerator is not).
public struct SeededGenerator: RandomNumberGenerator, Sendable {
    private var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// A directory under /tmp removed by `remove()` (call it in a `defer`).
public struct ScratchDirectory: Sendable {
    public let path: String

    public init(_ label: String = "scratch") throws {
        var template = Array("/tmp/cairn-\(label)-XXXXXX".utf8CString)
        let created = template.withUnsafeMutableBufferPointer { buffer -> String? in
            guard let result = mkdtemp(buffer.baseAddress!) else { return nil }
            return String(cString: result)
        }
        guard let created else { throw TestDaemonError("mkdtemp failed: \(String(cString: strerror(errno)))") }
        path = created
    }

    public func file(_ name: String) -> String { path + "/" + name }

    public func remove() { try? FileManager.default.removeItem(atPath: path) }
}

/// A client process that keeps running while the test does something else (fio during a shutdown, a
/// held-open NBD session, qemu-storage-daemon). Output goes to files; stop it by PID.
public final class BackgroundProcess: @unchecked Sendable {
    // @unchecked: `process` is set once in init; Process itself is thread-safe for these calls.
    public let process: Process
    public let stdoutPath: String
    public let stderrPath: String

    /// Runs a program with every signal unblocked, then execs `argv[1:]` (same PID). Children of the test
    /// runner inherit a signal mask with SIGTERM, SIGINT and SIGHUP blocked; a program that relies on
    /// them for a clean stop (qemu-storage-daemon unmounting its FUSE export) needs them back.
    static let unblockSignals =
        "import os, signal, sys; signal.pthread_sigmask(signal.SIG_SETMASK, set()); os.execv(sys.argv[1], sys.argv[1:])"

    /// - Parameter unblockingSignals: start the program with an empty signal mask (see `unblockSignals`).
    public init(
        _ executable: String, _ arguments: [String], environment: [String: String]? = nil,
        unblockingSignals: Bool = false
    ) throws {
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("cairn-bg-\(UUID().uuidString)").path
        stdoutPath = base + ".out"
        stderrPath = base + ".err"
        FileManager.default.createFile(atPath: stdoutPath, contents: nil)
        FileManager.default.createFile(atPath: stderrPath, contents: nil)
        process = Process()
        if unblockingSignals {
            process.executableURL = URL(fileURLWithPath: Tools.python)
            process.arguments = ["-c", Self.unblockSignals, executable] + arguments
        } else {
            process.executableURL = URL(fileURLWithPath: executable)
            process.arguments = arguments
        }
        if let environment {
            process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        }
        process.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: stdoutPath))
        process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: stderrPath))
        process.standardInput = FileHandle.nullDevice
        try process.run()
    }

    public var pid: Int32 { process.processIdentifier }
    public var isRunning: Bool { process.isRunning }
    public var stdout: String { (try? String(contentsOfFile: stdoutPath, encoding: .utf8)) ?? "" }
    public var stderr: String { (try? String(contentsOfFile: stderrPath, encoding: .utf8)) ?? "" }

    /// Sends `signal` to this process only.
    public func signal(_ signal: Int32) {
        if process.isRunning { Glibc.kill(process.processIdentifier, signal) }
    }

    /// Waits for the process to exit; returns its status, or nil when it is still running after `timeout`.
    public func wait(timeout: Double) async throws -> Int32? {
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning {
            if Date() >= deadline { return nil }
            try await Task.sleep(nanoseconds: 20_000_000)
        }
        return process.terminationStatus
    }

    /// SIGKILL if still running, reap it and delete the output files.
    public func cleanUp() {
        if process.isRunning {
            Glibc.kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        try? FileManager.default.removeItem(atPath: stdoutPath)
        try? FileManager.default.removeItem(atPath: stderrPath)
    }

    /// "exit N / stdout / stderr" for failure messages.
    public var summary: String {
        let status = process.isRunning ? "running" : "exit \(process.terminationStatus)"
        return "\(status)\n--- stdout\n\(stdout)\n--- stderr\n\(stderr)"
    }
}

/// Polls `condition` every 50 ms for up to `timeout` seconds; returns whether it became true.
@discardableResult
public func poll(timeout: Double, _ condition: () async throws -> Bool) async throws -> Bool {
    let deadline = Date().addingTimeInterval(timeout)
    while true {
        if try await condition() { return true }
        if Date() >= deadline { return false }
        try await Task.sleep(nanoseconds: 50_000_000)
    }
}

/// Parses a tool's JSON output (an object or an array), with the output in the error.
public func parseJSON(_ text: String) throws -> Any {
    do {
        return try JSONSerialization.jsonObject(with: Data(text.utf8), options: [.fragmentsAllowed])
    } catch {
        throw TestDaemonError("not JSON (\(error)):\n\(text)")
    }
}

/// Bytes a file or directory tree occupies on disk (st_blocks × 512, what `du` counts).
public func allocatedBytes(atPath path: String) -> UInt64 {
    var info = stat()
    guard lstat(path, &info) == 0 else { return 0 }
    var total = UInt64(info.st_blocks) * 512
    if (info.st_mode & S_IFMT) == S_IFDIR,
        let children = try? FileManager.default.contentsOfDirectory(atPath: path)
    {
        for child in children { total += allocatedBytes(atPath: path + "/" + child) }
    }
    return total
}

/// Runs a Python script with Debian's python3 (the one with libnbd), arguments after the script.
public func runPython(_ script: String, _ arguments: [String], timeout: Double = 60) async throws -> ProcessResult {
    try await runProcess(Tools.python, ["-c", script] + arguments, timeout: timeout)
}

/// Extra tools the interop suites need beyond `Tools`.
public enum MoreTools {
    public static let qemuStorageDaemon = "/usr/bin/qemu-storage-daemon"
    public static let qemu10StorageDaemon = Tools.qemu10Directory + "/qemu-storage-daemon"
    public static let nbdsh = "/usr/bin/nbdsh"
    public static let mkfsExt4 = "/usr/sbin/mkfs.ext4"
    public static let fsckExt4 = "/usr/sbin/fsck.ext4"
    public static let mount = "/usr/bin/mount"
    public static let umount = "/usr/bin/umount"
    public static let mountpoint = "/usr/bin/mountpoint"

    /// The first of `paths` that exists and is executable.
    public static func firstExecutable(_ paths: [String]) -> String? {
        paths.first { FileManager.default.isExecutableFile(atPath: $0) }
    }
}

/// qemu-io's verdict lines: a run "passes" only with exit 0 and no failed pattern check or I/O error.
public extension ProcessResult {
    var qemuIOClean: Bool {
        status == 0 && !stdout.contains("Pattern verification failed") && !stderr.contains("Pattern verification failed")
            && !stdout.contains("error") && !stderr.contains("error")
    }

    /// `qemu-io` reports a read -P mismatch on stdout and still exits 0 (7.2) or 1 (10).
    var qemuIOPatternFailed: Bool {
        stdout.contains("Pattern verification failed") || stderr.contains("Pattern verification failed")
    }
}
