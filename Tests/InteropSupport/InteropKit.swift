import Foundation
import Glibc

// Shared helpers for the daemon-level interop suites: seeds, scratch directories, long-running client
// processes, JSON from tools, polling and disk usage.

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

/// The one thread every background child is spawned from. Linux sends a child its parent-death signal
/// when the *thread* that forked it exits, and nbdkit asks for SIGTERM on its parent's death
/// (`PR_SET_PDEATHSIG`): spawned from one of the test runner's worker threads, which end when idle, it was
/// stopped in the middle of a test. This thread never ends.
final class SpawnThread: @unchecked Sendable {
    // @unchecked: `jobs` is only touched under `condition`.
    static let shared = SpawnThread()
    private let condition = NSCondition()
    private var jobs: [() -> Void] = []

    private init() {
        let thread = Thread { [self] in serve() }
        thread.name = "test-spawner"
        thread.start()
    }

    private func serve() {
        while true {
            condition.lock()
            while jobs.isEmpty { condition.wait() }
            let job = jobs.removeFirst()
            condition.unlock()
            job()
        }
    }

    /// Runs `body` (a spawn: its status) on the spawning thread and waits for it. Escaping, though it never
    /// outlives the call: the spawning thread may still hold the job a moment after it signalled the caller.
    func run(_ body: @escaping () -> Int32) -> Int32 {
        var status: Int32 = 0  // written before `done` is signalled, read after
        let done = DispatchSemaphore(value: 0)
        condition.lock()
        jobs.append {
            status = body()
            done.signal()
        }
        condition.signal()
        condition.unlock()
        done.wait()
        return status
    }
}

/// A client process that keeps running while the test does something else (fio during a shutdown, a
/// held-open NBD session, qemu-storage-daemon). Output goes to files; stop it by PID.
///
/// Started with posix_spawn and a clean signal state: children of the test runner otherwise inherit a
/// signal mask with SIGTERM, SIGINT, SIGHUP, SIGALRM and SIGCHLD blocked (and SIGPIPE ignored), so a
/// SIGTERM never reaches them: `runProcess`'s timeout cannot stop a hung client, qemu-storage-daemon
/// cannot unmount its FUSE export and `nbdkit --run` never returns.
public final class BackgroundProcess: @unchecked Sendable {
    // @unchecked: `pid` is immutable; `exitStatus` is only touched under `lock`.
    public let pid: pid_t
    /// Signals go through this, never through `kill(pid)` (see `ProcessHandle`).
    private let handle: ProcessHandle
    public let stdoutPath: String
    public let stderrPath: String
    private let lock = NSLock()
    private var exitStatus: Int32?

    /// Signals reset to their default action in the child.
    static let defaultSignals: [Int32] = [
        SIGPIPE, SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGALRM, SIGCHLD,
    ]

    /// glibc ≥ 2.34's posix_spawn_file_actions_addclosefrom_np (Swift does not import it; looked up at run time).
    typealias AddCloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32
    static let addCloseFrom: AddCloseFrom? = {
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "posix_spawn_file_actions_addclosefrom_np")
        else { return nil }
        return unsafeBitCast(symbol, to: AddCloseFrom.self)
    }()

    public init(_ executable: String, _ arguments: [String], environment: [String: String]? = nil) throws {
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("cairn-bg-\(UUID().uuidString)").path
        stdoutPath = base + ".out"
        stderrPath = base + ".err"
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigmask(&attributes, &empty)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for signal in Self.defaultSignals { sigaddset(&defaults, signal) }
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        // A process group of its own: a signal some other test's child sends to its whole group (kill 0)
        // must not stop a reference server or a held client in the middle of this test.
        posix_spawnattr_setpgroup(&attributes, 0)
        posix_spawnattr_setflags(
            &attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETPGROUP))
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, stdoutPath, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        posix_spawn_file_actions_addopen(&actions, 2, stderrPath, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        // Nothing else of the test process leaks into the child (a file another test is writing on a
        // mounted filesystem would keep that filesystem busy; a FIFO's write end would keep it open).
        if let closeFrom = Self.addCloseFrom {
            _ = closeFrom(&actions, 3)
        }
        var environmentStrings: [String] = []
        let merged = ProcessInfo.processInfo.environment.merging(environment ?? [:]) { $1 }
        for (key, value) in merged { environmentStrings.append("\(key)=\(value)") }
        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        let envp = environmentStrings.map { strdup($0) } + [nil]
        defer {
            for pointer in argv { free(pointer) }
            for pointer in envp { free(pointer) }
        }
        var child: pid_t = 0
        let result = SpawnThread.shared.run {
            posix_spawn(&child, executable, &actions, &attributes, argv, envp)
        }
        guard result == 0 else {
            throw TestDaemonError("cannot start \(executable): \(String(cString: strerror(result)))")
        }
        pid = child
        handle = ProcessHandle(pid: child, executable: executable)
    }

    /// Reaps the child if it has exited (never blocks).
    private func reap() -> Int32? {
        lock.lock()
        defer { lock.unlock() }
        if let exitStatus { return exitStatus }
        var status: Int32 = 0
        let result = waitpid(pid, &status, WNOHANG)
        if result == -1 && errno == ECHILD {
            // Reaped by someone else (Foundation's own child watcher): the process is gone, and its pid may
            // already belong to another process, which must never be signalled in its place.
            exitStatus = -1
            return exitStatus
        }
        guard result == pid else {
            // Still ours and running, unless someone else reaped it and the pid now names another child.
            if result == 0, handle.hasExited {
                exitStatus = -1
                return exitStatus
            }
            return nil
        }
        // Exit code, or 128 + signal number like a shell.
        let signal = status & 0x7f
        exitStatus = signal == 0 ? (status >> 8) & 0xff : 128 + signal
        return exitStatus
    }

    public var isRunning: Bool { reap() == nil }
    /// Exit code (128 + N when killed by signal N); nil while running.
    public var terminationStatus: Int32? { reap() }
    public var stdout: String { (try? String(contentsOfFile: stdoutPath, encoding: .utf8)) ?? "" }
    public var stderr: String { (try? String(contentsOfFile: stderrPath, encoding: .utf8)) ?? "" }

    /// Sends `signal` to this process only.
    public func signal(_ signal: Int32) {
        if isRunning { handle.signal(signal) }
    }

    /// Waits for the process to exit; returns its status, or nil when it is still running after `timeout`.
    public func wait(timeout: Double) async throws -> Int32? {
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            if let status = reap() { return status }
            if Date() >= deadline { return nil }
            try await Task.sleep(nanoseconds: 10_000_000)
        }
    }

    /// SIGKILL if still running, reap it and delete the output files.
    public func cleanUp() {
        if reap() == nil {
            handle.signal(SIGKILL)
            while reap() == nil { usleep(5_000) }
        }
        handle.close()
        try? FileManager.default.removeItem(atPath: stdoutPath)
        try? FileManager.default.removeItem(atPath: stderrPath)
    }

    /// "exit N / stdout / stderr" for failure messages.
    public var summary: String {
        let status = reap().map { "exit \($0)" } ?? "running"
        return "\(status)\n--- stdout\n\(stdout)\n--- stderr\n\(stderr)"
    }
}

/// Runs a client to completion like `runProcess`, but with a clean signal state (see
/// `BackgroundProcess`) and a timeout that works: SIGTERM, then SIGKILL two seconds later. A client
/// stopped by the timeout reports exit 128 + signal (143 or 137) and says so on stderr.
public func runTool(
    _ executable: String, _ arguments: [String], environment: [String: String]? = nil, timeout: Double = 120
) async throws -> ProcessResult {
    let child = try BackgroundProcess(executable, arguments, environment: environment)
    defer { child.cleanUp() }
    var status = try await child.wait(timeout: timeout)
    var note = ""
    if status == nil {
        child.signal(SIGTERM)
        status = try await child.wait(timeout: 2)
        if status == nil { child.signal(SIGKILL) }
        status = try await child.wait(timeout: 10)
        note = "\n[runTool: \(executable) still running after \(timeout) s; stopped]"
    }
    return ProcessResult(status: status ?? -1, stdout: child.stdout, stderr: child.stderr + note)
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
    // Tests/python's helpers (libiscsi through ctypes) are importable from every script.
    try await runTool(
        Tools.python, ["-c", script] + arguments, environment: ["PYTHONPATH": Tools.packageRoot + "/Tests/python"],
        timeout: timeout)
}

/// Extra tools the interop suites need beyond `Tools`.
public enum MoreTools {
    public static let qemuStorageDaemon = "/usr/bin/qemu-storage-daemon"
    public static let qemu10StorageDaemon = Tools.qemu10Directory + "/qemu-storage-daemon"
    public static let mkfsExt4 = "/usr/sbin/mkfs.ext4"
    public static let fsckExt4 = "/usr/sbin/fsck.ext4"
    public static let mount = "/usr/bin/mount"
    public static let umount = "/usr/bin/umount"
    /// Debian's Chromium, run headless to load the status page as a browser does.
    public static let chromium = "/usr/bin/chromium"

    /// The first of `paths` that exists and is executable.
    public static func firstExecutable(_ paths: [String]) -> String? {
        paths.first { FileManager.default.isExecutableFile(atPath: $0) }
    }
}

/// qemu-io's verdict on pattern checks.
extension ProcessResult {
    /// `qemu-io` reports a read -P mismatch on stdout and still exits 0 (7.2) or 1 (10).
    public var qemuIOPatternFailed: Bool {
        stdout.contains("Pattern verification failed") || stderr.contains("Pattern verification failed")
    }
}
