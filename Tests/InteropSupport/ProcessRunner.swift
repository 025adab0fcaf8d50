import Foundation
import Glibc

/// The outcome of running a real client.
public struct ProcessResult: Sendable, CustomStringConvertible {
    public var status: Int32
    public var stdout: String
    public var stderr: String

    public init(status: Int32, stdout: String, stderr: String) {
        self.status = status
        self.stdout = stdout
        self.stderr = stderr
    }

    public var description: String { "exit \(status)\n--- stdout\n\(stdout)\n--- stderr\n\(stderr)" }
}

/// Runs a program to completion (terminating it after `timeout` seconds) off the caller's thread.
/// Output goes to temporary files, so a chatty child can never block on a full pipe.
public func runProcess(
    _ executable: String,
    _ arguments: [String],
    environment: [String: String]? = nil,
    timeout: Double = 60
) async throws -> ProcessResult {
    try await withCheckedThrowingContinuation { continuation in
        DispatchQueue.global().async {
            do {
                continuation.resume(returning: try runBlocking(executable, arguments, environment, timeout))
            } catch {
                continuation.resume(throwing: error)
            }
        }
    }
}

private func runBlocking(
    _ executable: String,
    _ arguments: [String],
    _ environment: [String: String]?,
    _ timeout: Double
) throws -> ProcessResult {
    let directory = FileManager.default.temporaryDirectory
    let outURL = directory.appendingPathComponent("nbd-test-\(UUID().uuidString).out")
    let errURL = directory.appendingPathComponent("nbd-test-\(UUID().uuidString).err")
    _ = FileManager.default.createFile(atPath: outURL.path, contents: nil)
    _ = FileManager.default.createFile(atPath: errURL.path, contents: nil)
    defer {
        try? FileManager.default.removeItem(at: outURL)
        try? FileManager.default.removeItem(at: errURL)
    }
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    if let environment {
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
    }
    process.standardOutput = try FileHandle(forWritingTo: outURL)
    process.standardError = try FileHandle(forWritingTo: errURL)
    process.standardInput = FileHandle.nullDevice
    try process.run()
    // SIGKILL: children of the test runner start with SIGTERM blocked, so terminate() would not stop a
    // hung client.
    let handle = ProcessHandle(pid: process.processIdentifier, executable: process.executableURL!.path)
    defer { handle.close() }
    let killer = DispatchWorkItem { if process.isRunning { handle.signal(SIGKILL) } }
    DispatchQueue.global().asyncAfter(deadline: .now() + timeout, execute: killer)
    process.waitUntilExit()
    killer.cancel()
    return ProcessResult(
        status: process.terminationStatus,
        stdout: (try? String(contentsOf: outURL, encoding: .utf8)) ?? "",
        stderr: (try? String(contentsOf: errURL, encoding: .utf8)) ?? ""
    )
}

/// Paths of the real clients the interop tests drive.
public enum Tools {
    public static let qemuIO = "/usr/bin/qemu-io"
    public static let qemuImg = "/usr/bin/qemu-img"
    public static let nbdinfo = "/usr/bin/nbdinfo"
    public static let nbdcopy = "/usr/bin/nbdcopy"
    public static let fio = "/usr/bin/fio"
    /// Prometheus' linter for the `/metrics` exposition (Debian's `prometheus` package).
    public static let promtool = "/usr/bin/promtool"
    /// Debian's python3, which has the libnbd bindings (another python3 may come first on PATH).
    public static let python = "/usr/bin/python3"
    /// qemu 10 binaries (extended headers), extracted from bookworm-backports by scripts/test into
    /// .cache/qemu10 (or wherever CAIRN_QEMU10_BIN points); not a Debian 12 package.
    public static let qemu10Directory: String = {
        if let path = ProcessInfo.processInfo.environment["CAIRN_QEMU10_BIN"] { return path }
        return packageRoot + "/.cache/qemu10/usr/bin"
    }()
    /// The repository root (this file is Tests/InteropSupport/ProcessRunner.swift).
    public static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().path
    public static let qemu10IO = qemu10Directory + "/qemu-io"
    public static let qemu10Img = qemu10Directory + "/qemu-img"
}
