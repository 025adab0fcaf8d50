import CCairnIO
import Glibc

/// Names the calling thread (top -H, perf); at most 15 bytes are kept.
public func setCurrentThreadName(_ name: String) {
    cairn_set_thread_name(String(name.prefix(15)))
}

/// A mutex with one condition variable (a Hoare/Mesa monitor). Used where a thread must wait for
/// state another thread changes (chunk locks, executor queue); `Synchronization.Mutex` has no wait.
public final class Monitor: @unchecked Sendable {
    // @unchecked: the pthread objects are only touched through pthread calls, which do their own
    // synchronization; they are heap-allocated so their addresses never move.
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private let condition: UnsafeMutablePointer<pthread_cond_t>

    public init() {
        mutex = .allocate(capacity: 1)
        condition = .allocate(capacity: 1)
        pthread_mutex_init(mutex, nil)
        // Timed waits measure against CLOCK_MONOTONIC so that wall-clock jumps do not stretch them.
        var attributes = pthread_condattr_t()
        pthread_condattr_init(&attributes)
        pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC)
        pthread_cond_init(condition, &attributes)
        pthread_condattr_destroy(&attributes)
    }

    deinit {
        pthread_cond_destroy(condition)
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
        condition.deallocate()
    }

    /// Runs `body` with the mutex held.
    @inline(__always)
    public func withLock<T>(_ body: () throws -> T) rethrows -> T {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body()
    }

    /// Runs `body` with the mutex held if it is free right now; nil (nothing run) if another thread holds it.
    /// For callers that must never wait (an event loop).
    @inline(__always)
    public func withLockIfFree<T>(_ body: () throws -> T) rethrows -> T? {
        guard pthread_mutex_trylock(mutex) == 0 else { return nil }
        defer { pthread_mutex_unlock(mutex) }
        return try body()
    }

    /// Waits for a broadcast. Call only with the mutex held (from inside `withLock`); re-check the
    /// condition in a loop, as with every condition variable.
    public func wait() {
        pthread_cond_wait(condition, mutex)
    }

    /// Waits for a broadcast or until `nanoseconds` have passed. Returns false on timeout. Call only with
    /// the mutex held.
    @discardableResult
    public func wait(timeoutNanoseconds nanoseconds: UInt64) -> Bool {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        let total = UInt64(now.tv_nsec) + nanoseconds % 1_000_000_000
        var deadline = timespec()
        deadline.tv_sec = now.tv_sec + Int(nanoseconds / 1_000_000_000) + Int(total / 1_000_000_000)
        deadline.tv_nsec = Int(total % 1_000_000_000)
        return pthread_cond_timedwait(condition, mutex, &deadline) != ETIMEDOUT
    }

    /// Wakes every waiter. Call with or without the mutex held.
    public func broadcast() {
        pthread_cond_broadcast(condition)
    }

    /// Wakes one waiter.
    public func signal() {
        pthread_cond_signal(condition)
    }
}
