import NIOCore
import Synchronization

/// Hands results from the I/O threads back to one event loop in batches: the first completion schedules
/// one task on the loop, and every completion that arrives before that task runs rides along. Under load
/// this turns one cross-thread wakeup per request into one per burst.
final class CompletionBatcher: Sendable {
    let eventLoop: any EventLoop
    private let pending = Mutex<(completions: [@Sendable () -> Void], scheduled: Bool)>(([], false))

    init(eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
    }

    /// Runs `completion` on the event loop, batched with others (called from any thread).
    func complete(_ completion: @escaping @Sendable () -> Void) {
        let schedule = pending.withLock { state -> Bool in
            state.completions.append(completion)
            guard !state.scheduled else { return false }
            state.scheduled = true
            return true
        }
        guard schedule else { return }
        eventLoop.execute { [self] in
            let batch = pending.withLock { state -> [@Sendable () -> Void] in
                state.scheduled = false
                defer { state.completions.removeAll(keepingCapacity: true) }
                return state.completions
            }
            for completion in batch { completion() }
        }
    }
}

/// One batcher per event loop, created on first use.
final class CompletionBatchers: Sendable {
    private let batchers = Mutex<[ObjectIdentifier: CompletionBatcher]>([:])

    func batcher(for eventLoop: any EventLoop) -> CompletionBatcher {
        batchers.withLock { all in
            let key = ObjectIdentifier(eventLoop)
            if let existing = all[key] { return existing }
            let batcher = CompletionBatcher(eventLoop: eventLoop)
            all[key] = batcher
            return batcher
        }
    }
}
