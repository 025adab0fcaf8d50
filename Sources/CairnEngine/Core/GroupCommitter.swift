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
    /// Callers that asked for a commit without waiting: (commit that must complete, callback).
    private var callbacks: [(target: UInt64, callback: @Sendable () -> Void)] = []
    private var thread = pthread_t()
    private let intervalNanoseconds: UInt64
    private let commit: (_ requested: Bool) -> Void

    /// - Parameters:
    ///   - intervalNanoseconds: longest time a metadata change stays uncommitted without a FLUSH.
    ///   - commit: does one commit; `requested` is false for a timer commit (nobody waits for it, so it
    ///     may skip syncing data that no metadata depends on). Records its own failure.
    init(intervalNanoseconds: UInt64, commit: @escaping (_ requested: Bool) -> Void) {
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

    /// Like `commitAndWait`, but returns at once and calls `callback` on the commit thread once a commit
    /// that started after this call has finished: a FLUSH need not park an I/O thread while it waits.
    func commit(then callback: @escaping @Sendable () -> Void) {
        let runNow = monitor.withLock { () -> Bool in
            if stopping { return true }
            let target = started + 1
            wanted = max(wanted, target)
            callbacks.append((target, callback))
            return false
        }
        if runNow {
            callback()
        } else {
            monitor.broadcast()
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
            let requested: Bool? = monitor.withLock {
                if wanted <= started && !stopping {
                    monitor.wait(timeoutNanoseconds: intervalNanoseconds)
                }
                if stopping { return nil }
                let requested = wanted > started
                started += 1
                return requested
            }
            guard let requested else { break }
            commit(requested)
            let ready = monitor.withLock { () -> [@Sendable () -> Void] in
                completed = started
                let ready = callbacks.filter { $0.target <= completed }.map(\.callback)
                callbacks.removeAll { $0.target <= completed }
                return ready
            }
            monitor.broadcast()
            for callback in ready { callback() }
        }
        let remaining = monitor.withLock { () -> [@Sendable () -> Void] in
            completed = started
            defer { callbacks.removeAll() }
            return callbacks.map(\.callback)
        }
        monitor.broadcast()
        // Stopping: the owner's final commit follows; these callers learn the outcome from the pool state.
        for callback in remaining { callback() }
    }
}
