import Synchronization

/// Bytes the target has not acknowledged yet, bounded (asynchronous mode): a writer waits while the
/// budget is spent. A single write larger than the whole budget is let through alone.
public final class LagBudget: Sendable {
    public let limit: UInt64

    private struct State {
        var used: UInt64 = 0
        var waiting: [(bytes: UInt64, continuation: CheckedContinuation<Void, Never>)] = []
    }

    private let state = Mutex(State())

    public init(limit: UInt64) { self.limit = max(limit, 1) }

    /// Bytes in flight to the target now.
    public var used: UInt64 { state.withLock { $0.used } }

    func acquire(_ bytes: UInt64) async {
        let granted = state.withLock { s -> Bool in
            guard s.waiting.isEmpty, s.used == 0 || s.used + bytes <= limit else { return false }
            s.used += bytes
            return true
        }
        if granted { return }
        await withCheckedContinuation { continuation in
            let now = state.withLock { s -> Bool in
                if s.waiting.isEmpty && (s.used == 0 || s.used + bytes <= limit) {
                    s.used += bytes
                    return true
                }
                s.waiting.append((bytes, continuation))
                return false
            }
            if now { continuation.resume() }
        }
    }

    func release(_ bytes: UInt64) {
        let ready = state.withLock { s -> [CheckedContinuation<Void, Never>] in
            s.used -= min(bytes, s.used)
            var ready: [CheckedContinuation<Void, Never>] = []
            while let first = s.waiting.first, s.used == 0 || s.used + first.bytes <= limit {
                s.used += first.bytes
                ready.append(first.continuation)
                s.waiting.removeFirst()
            }
            return ready
        }
        for continuation in ready { continuation.resume() }
    }
}
