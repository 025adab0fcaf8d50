import Foundation
import Glibc

/// A signal target that cannot be a stranger: a Linux pidfd, opened while the child is still ours.
///
/// Signalling by pid is unsafe in a test runner: with Linux's default 32768 pids, a full suite (with its
/// threads) wraps them within minutes, and a child reaped by someone else (Foundation reaps its own
/// `Process` children on its own schedule) leaves a pid that the next process may get. A
/// `perf record -e signal:signal_generate` of a failing run caught the runner sending SIGTERM to an
/// nbdkit that another test had started. `pidfd_send_signal` reaches exactly the process the pidfd was
/// opened for, or fails with ESRCH once it has exited.
public final class ProcessHandle: @unchecked Sendable {
    // @unchecked: `fd` is set once in init and closed once (under `lock`).
    private var fd: Int32
    private let lock = NSLock()

    typealias PidfdOpen = @convention(c) (pid_t, UInt32) -> Int32
    typealias PidfdSendSignal = @convention(c) (Int32, Int32, UnsafeMutableRawPointer?, UInt32) -> Int32
    /// glibc ≥ 2.36 wrappers (Swift's Glibc module does not import <sys/pidfd.h>).
    static let pidfdOpen: PidfdOpen? = {
        dlsym(UnsafeMutableRawPointer(bitPattern: 0), "pidfd_open").map { unsafeBitCast($0, to: PidfdOpen.self) }
    }()
    static let pidfdSendSignal: PidfdSendSignal? = {
        dlsym(UnsafeMutableRawPointer(bitPattern: 0), "pidfd_send_signal").map {
            unsafeBitCast($0, to: PidfdSendSignal.self)
        }
    }()

    /// Opens a pidfd for `pid`, which must be a child that has not been reaped yet (or the open may
    /// name a stranger): call it right after spawning `executable`. A child that exited and was reaped
    /// before the open leaves its pid free for the next process; when the pid runs another program than
    /// `executable`, the handle stays inert rather than hold a stranger.
    public init(pid: pid_t, executable: String) {
        fd = Self.pidfdOpen.map { $0(pid, 0) } ?? -1
        guard fd >= 0, let expected = Self.program(executable), let running = Self.running(pid), running != expected
        else { return }
        FileHandle.standardError.write(
            Data("ProcessHandle: pid \(pid) runs \(running), not \(expected): the child was reaped before its pidfd opened; it will not be signalled\n".utf8))
        Glibc.close(fd)
        fd = -1
    }

    /// The resolved path of an ELF executable that keeps running as itself: nil for a script (it runs as
    /// its interpreter) and for a shell or `env` (they may exec another program at once).
    static func program(_ path: String) -> String? {
        let launchers = ["sh", "bash", "dash", "env"]
        guard !launchers.contains(URL(fileURLWithPath: path).lastPathComponent), let file = FileHandle(forReadingAtPath: path) else { return nil }
        defer { try? file.close() }
        guard (try? file.read(upToCount: 4)) == Data([0x7F, 0x45, 0x4C, 0x46]) else { return nil }
        return URL(fileURLWithPath: path).resolvingSymlinksInPath().path
    }

    /// What `pid` runs now (`/proc/<pid>/exe`); nil once it has exited.
    static func running(_ pid: pid_t) -> String? {
        try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/exe")
    }

    /// Sends `signal` to the process if it still exists; never to anyone else.
    public func signal(_ signal: Int32) {
        lock.lock()
        defer { lock.unlock() }
        guard fd >= 0, let send = Self.pidfdSendSignal else { return }
        _ = send(fd, signal, nil, 0)
    }

    /// True once the process has exited (the pidfd turns readable), whoever reaps it.
    public var hasExited: Bool {
        lock.lock()
        defer { lock.unlock() }
        guard fd >= 0 else { return false }
        var entry = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        return poll(&entry, 1, 0) == 1
    }

    public func close() {
        lock.lock()
        defer { lock.unlock() }
        if fd >= 0 { Glibc.close(fd) }
        fd = -1
    }

    deinit { if fd >= 0 { Glibc.close(fd) } }
}
