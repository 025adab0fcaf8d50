import Glibc

/// A fixed set of threads that run blocking file I/O, fed by a bounded FIFO queue.
///
/// Event loops and Swift concurrency's cooperative pool must never block in `pread` or `fdatasync`;
/// everything that touches a slot file goes through here. The queue is bounded so that a bug upstream
/// shows up as a clear `queueFull` error rather than unbounded memory growth: the NBD server's
/// per-connection in-flight limit is what normally pushes back on clients.
public final class IOExecutor: @unchecked Sendable {
    // @unchecked: all mutable state (`queue`, `head`, `count`, `state`) is only touched with
    // `monitor` held; `threads` is written once in init before any worker can observe it.

    /// Why a submission was refused.
    public enum SubmitError: Error, Sendable {
        case queueFull(capacity: Int)
        case shutDown
    }

    private enum State { case running, draining, stopped }

    public let threadCount: Int
    public let queueCapacity: Int
    private let monitor = Monitor()
    private var queue: [(@Sendable () -> Void)?]
    private var head = 0
    private var count = 0
    private var state = State.running
    private var threads: [pthread_t] = []

    /// - Parameters:
    ///   - threadCount: worker threads; I/O depth the disk sees from this process.
    ///   - queueCapacity: jobs that may wait for a thread before `submit` fails.
    ///   - name: thread name prefix (shown by top -H and perf; at most 15 bytes with the index).
    public init(threadCount: Int, queueCapacity: Int, name: String = "cairn-io") {
        precondition(threadCount > 0 && queueCapacity > 0)
        self.threadCount = threadCount
        self.queueCapacity = queueCapacity
        self.queue = Array(repeating: nil, count: queueCapacity)
        for index in 0..<threadCount {
            let box = Unmanaged.passRetained(Box(executor: self, name: "\(name)-\(index)"))
            var thread = pthread_t()
            let rc = pthread_create(&thread, nil, { raw in
                let box = Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue()
                setCurrentThreadName(box.name)
                box.executor.workerLoop()
                return nil
            }, box.toOpaque())
            precondition(rc == 0, "pthread_create failed: \(rc)")
            threads.append(thread)
        }
    }

    private final class Box {
        let executor: IOExecutor
        let name: String
        init(executor: IOExecutor, name: String) {
            self.executor = executor
            self.name = name
        }
    }

    /// Queues `work` to run on a worker thread.
    public func submit(_ work: @escaping @Sendable () -> Void) throws(SubmitError) {
        let outcome: SubmitError? = monitor.withLock {
            guard state == .running else { return .shutDown }
            guard count < queueCapacity else { return .queueFull(capacity: queueCapacity) }
            queue[(head + count) % queueCapacity] = work
            count += 1
            return nil
        }
        if let outcome { throw outcome }
        monitor.signal()
    }

    /// Runs `work` on a worker thread and returns its result to an async caller.
    public func run<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
            do {
                try submit { continuation.resume(with: Result { try work() }) }
            } catch {
                continuation.resume(throwing: error)
            }
        }
    }

    /// Lets queued work finish, then stops and joins the threads. Later submissions fail.
    public func shutdown() {
        let wasRunning = monitor.withLock {
            guard state == .running else { return false }
            state = .draining
            return true
        }
        guard wasRunning else { return }
        monitor.broadcast()
        for thread in threads { pthread_join(thread, nil) }
        monitor.withLock { state = .stopped }
    }

    private func workerLoop() {
        while true {
            let work: (@Sendable () -> Void)? = monitor.withLock {
                while count == 0 && state == .running { monitor.wait() }
                guard count > 0 else { return nil }
                let job = queue[head]
                queue[head] = nil
                head = (head + 1) % queueCapacity
                count -= 1
                return job
            }
            guard let work else { return }
            work()
        }
    }
}
