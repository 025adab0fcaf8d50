import Foundation

/// The outcome of running a real client.
struct ProcessResult: Sendable, CustomStringConvertible {
    var status: Int32
    var stdout: String
    var stderr: String

    var description: String { "exit \(status)\n--- stdout\n\(stdout)\n--- stderr\n\(stderr)" }
}

/// Runs a program to completion (terminating it after `timeout` seconds) off the caller's thread.
/// Output goes to temporary files, so a chatty child can never block on a full pipe.
func runProcess(
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
    let killer = DispatchWorkItem { if process.isRunning { process.terminate() } }
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
enum Tools {
    static let qemuIO = "/usr/bin/qemu-io"
    static let qemuImg = "/usr/bin/qemu-img"
    static let nbdinfo = "/usr/bin/nbdinfo"
    static let nbdcopy = "/usr/bin/nbdcopy"
    static let fio = "/usr/bin/fio"
    /// Debian's python3, which has the libnbd bindings (another python3 may come first on PATH).
    static let python = "/usr/bin/python3"
    /// qemu 10 binaries (extended headers), extracted from bookworm-backports; not a Debian 12 package.
    static let qemu10IO = "/tmp/bpo/x/usr/bin/qemu-io"
    static let qemu10Img = "/tmp/bpo/x/usr/bin/qemu-img"

    static var hasQemu10: Bool { FileManager.default.isExecutableFile(atPath: qemu10IO) }
}
