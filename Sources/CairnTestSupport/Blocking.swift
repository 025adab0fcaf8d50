import Foundation

/// Runs blocking work (engine calls that wait on file I/O or locks) on its own thread and awaits it, so
/// that long synchronous tests do not starve Swift concurrency's small cooperative pool, which the
/// interop tests' daemons and subprocess waits also need.
public func blocking<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        let thread = Thread {
            continuation.resume(with: Result { try work() })
        }
        thread.stackSize = 8 << 20
        thread.start()
    }
}
