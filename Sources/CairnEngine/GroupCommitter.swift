import CairnIO
import Glibc

/// Runs metadata commits on one dedicated thread: on demand (FLUSH, FUA, management operations) and
/// on a timer. Callers that ask while a commit is running are all served by the next one (group
/// commit), so N concurrent FLUSHes cost two commits at most, not N.
final class GroupCommitter: @unchecked Sendable {
    // @unchecked: every mutable field is only touched with `monitor` held.
    private let monitor = Monitor()
    private var started: UInt64 = 0
    private var completed: UInt64 = 0
    private var wanted: UInt64 = 0
    private var stopping = false
    private var thread = pthread_t()
    private let intervalNanoseconds: UInt64
    private let commit: () -> Void

    /// - Parameters:
    ///   - intervalNanoseconds: longest time a metadata change stays uncommitted without a FLUSH.
    ///   - commit: does one commit; records its own failure (the pool turns read-only).
    init(intervalNanoseconds: UInt64, commit: @escaping () -> Void) {
        self.intervalNanoseconds = intervalNanoseconds
        self.commit = commit
        let box = Unmanaged.passRetained(self)
        let rc = pthread_create(&thread, nil, { raw in
            let committer = Unmanaged<GroupCommitter>.fromOpaque(raw!).takeRetainedValue()
            setCurrentThreadName("cairn-commit")
            committer.run()
            return nil
        }, box.toOpaque())
        precondition(rc == 0, "pthread_create failed: \(rc)")
    }

    /// Blocks until a commit that started after this call has finished.
    func commitAndWait() {
        let target = monitor.withLock { () -> UInt64 in
            let target = started + 1
            wanted = max(wanted, target)
            return target
        }
        monitor.broadcast()
        monitor.withLock {
            while completed < target && !stopping { monitor.wait() }
        }
    }

    /// Stops the thread after any commit in progress. Later `commitAndWait` calls return at once; the
    /// owner does its final commit itself.
    func stop() {
        let wasRunning = monitor.withLock {
            let wasRunning = !stopping
            stopping = true
            return wasRunning
        }
        guard wasRunning else { return }
        monitor.broadcast()
        pthread_join(thread, nil)
    }

    private func run() {
        while true {
            let shouldRun: Bool? = monitor.withLock {
                if wanted <= started && !stopping {
                    monitor.wait(timeoutNanoseconds: intervalNanoseconds)
                }
                if stopping { return nil }
                started += 1
                return true
            }
            guard shouldRun != nil else { break }
            commit()
            monitor.withLock { completed = started }
            monitor.broadcast()
        }
        monitor.withLock { completed = started }
        monitor.broadcast()
    }
}
