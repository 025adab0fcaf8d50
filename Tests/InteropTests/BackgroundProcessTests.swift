import Foundation
import Glibc
import InteropSupport
import Testing

@Suite("background processes outlive the thread that started them")
struct BackgroundProcessTests {
    @Test("nbdkit started from a thread that then exits keeps serving (it asks for SIGTERM at its parent's death)")
    func parentThreadExit() async throws {
        let scratch = try ScratchDirectory("spawn")
        defer { scratch.remove() }
        let file = scratch.file("disk.raw")
        let socket = scratch.file("nbdkit.sock")
        try await #require(runTool("/usr/bin/truncate", ["-s", "1M", file]).status == 0)

        // Start nbdkit from a thread of our own and let that thread end.
        final class Started: @unchecked Sendable {
            var process: Result<BackgroundProcess, any Error>?
            /// "PID/task/TID" of the starting thread.
            var thread = ""
        }
        let started = Started()
        let done = DispatchSemaphore(value: 0)
        Thread {
            started.thread = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/thread-self")) ?? ""
            started.process = Result { try BackgroundProcess("/usr/bin/nbdkit", ["-f", "-U", socket, "file", file]) }
            done.signal()
        }.start()
        done.wait()
        let nbdkit = try #require(try started.process?.get())
        defer { nbdkit.cleanUp() }
        try #require(started.thread.contains("/task/"), "no thread id: '\(started.thread)'")
        let gone = try await poll(timeout: 30) { !FileManager.default.fileExists(atPath: "/proc/\(started.thread)") }
        try #require(gone, "the starting thread \(started.thread) did not exit")

        // The thread's exit has sent whatever death signal it was going to; nbdkit must still serve.
        let up = try await poll(timeout: 20) { FileManager.default.fileExists(atPath: socket) || !nbdkit.isRunning }
        try #require(up, "nbdkit: \(nbdkit.summary)")
        let info = try await runTool("/usr/bin/nbdinfo", ["--size", "nbd+unix:///?socket=\(socket)"], timeout: 30)
        #expect(info.status == 0 && info.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "1048576", "\(info)")
        #expect(nbdkit.isRunning, "nbdkit stopped: \(nbdkit.summary)")
    }
}
