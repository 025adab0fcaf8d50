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

/// Runs a program to completion (stopping it after `timeout` seconds), as `runTool` does: spawned with a
/// clean signal state, output in temporary files (a chatty child never blocks on a full pipe), and its
/// exit awaited by polling, so no thread is held while it runs. (It used to block a dispatch worker in
/// `Process.waitUntilExit` per running client, beside Foundation's own child-exit handling on the same
/// pool; in one loaded run CLI calls then took up to a minute to reach the daemon.)
public func runProcess(
    _ executable: String,
    _ arguments: [String],
    environment: [String: String]? = nil,
    timeout: Double = 60
) async throws -> ProcessResult {
    try await runTool(executable, arguments, environment: environment, timeout: timeout)
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
