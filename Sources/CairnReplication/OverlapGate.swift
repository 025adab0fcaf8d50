import Synchronization

/// Orders mirrored writes that overlap: a write waits while an overlapping one is in flight, in arrival
/// order. NBD leaves the result of concurrent overlapping writes undefined, but both copies must end up
/// with the *same* undefined result; with at most one write per byte in flight, the primary and the
/// target apply overlapping writes in the same order whatever order frames are delivered or
/// retransmitted in, so frame reordering and duplicate delivery cannot make the copies differ.
/// The resync takes an extent through the same gate, so a copy never races a host write.
final class OverlapGate: Sendable {
    private struct Waiter {
        var range: Range<UInt64>
        var token: UInt64
        var continuation: CheckedContinuation<Void, Never>
    }

    private struct State {
        var held: [UInt64: Range<UInt64>] = [:]
        var waiting: [Waiter] = []
        var nextToken: UInt64 = 1
    }

    private let state = Mutex(State())

    /// Waits until no earlier holder or waiter overlaps `range`; returns the token to release.
    func acquire(_ range: Range<UInt64>) async -> UInt64 {
        let (token, granted) = state.withLock { s -> (UInt64, Bool) in
            let token = s.nextToken
            s.nextToken += 1
            let blocked = s.held.values.contains { $0.overlaps(range) } || s.waiting.contains { $0.range.overlaps(range) }
            if !blocked { s.held[token] = range }
            return (token, !blocked)
        }
        if granted { return token }
        await withCheckedContinuation { continuation in
            let grantedNow = state.withLock { s -> Bool in
                // Released between the check above and now: take it at once if nothing overlaps.
                let blocked =
                    s.held.values.contains { $0.overlaps(range) } || s.waiting.contains { $0.range.overlaps(range) }
                if !blocked {
                    s.held[token] = range
                    return true
                }
                s.waiting.append(Waiter(range: range, token: token, continuation: continuation))
                return false
            }
            if grantedNow { continuation.resume() }
        }
        return token
    }

    /// Takes `range` at once if no holder or waiter overlaps it; nil (nothing taken) otherwise. The write
    /// fast path uses it to stay off Swift concurrency when it need not wait.
    func tryAcquire(_ range: Range<UInt64>) -> UInt64? {
        state.withLock { s -> UInt64? in
            let blocked = s.held.values.contains { $0.overlaps(range) } || s.waiting.contains { $0.range.overlaps(range) }
            guard !blocked else { return nil }
            let token = s.nextToken
            s.nextToken += 1
            s.held[token] = range
            return token
        }
    }

    func release(_ token: UInt64) {
        let ready = state.withLock { s -> [CheckedContinuation<Void, Never>] in
            s.held[token] = nil
            var ready: [CheckedContinuation<Void, Never>] = []
            var stillWaiting: [Waiter] = []
            for waiter in s.waiting {
                let blocked =
                    s.held.values.contains { $0.overlaps(waiter.range) }
                    || stillWaiting.contains { $0.range.overlaps(waiter.range) }
                if blocked {
                    stillWaiting.append(waiter)
                } else {
                    s.held[waiter.token] = waiter.range
                    ready.append(waiter.continuation)
                }
            }
            s.waiting = stillWaiting
            return ready
        }
        for continuation in ready { continuation.resume() }
    }

    /// Runs `body` holding `range`.
    func withRange<T: Sendable>(_ range: Range<UInt64>, _ body: () async throws -> T) async rethrows -> T {
        let token = await acquire(range)
        defer { release(token) }
        return try await body()
    }
}
