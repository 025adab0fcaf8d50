import CairnIO
import Foundation
import Logging
import Synchronization

/// A long-running background operation (snapshot reclaim, dedup, ...) as users see it.
public struct JobInfo: Sendable, Hashable {
    public enum State: String, Sendable, Hashable {
        case running
        case succeeded
        case failed
        case cancelled
    }

    public var id: UInt64
    /// "reclaim", "dedup", ...
    public var kind: String
    /// What it works on ("vol@snap", "pool").
    public var target: String
    public var state: State
    /// Units done / total (chunks, bytes: see `unit`).
    public var done: UInt64
    public var total: UInt64
    public var unit: String
    public var startedAt: Date
    public var finishedAt: Date?
    /// Why it failed; or a one-line summary when it succeeded.
    public var message: String?
}

/// The jobs of a pool: progress, state, cancellation. Finished jobs are kept (the most recent
/// `retainedFinishedJobs`) so a user can still see how they ended.
public final class JobRegistry: Sendable {
    /// Enough history to see recent runs without growing forever.
    static let retainedFinishedJobs = 64

    private struct State {
        var nextID: UInt64 = 1
        var jobs: [UInt64: JobInfo] = [:]
        var cancelRequested: Set<UInt64> = []
    }

    private let state = Mutex(State())
    /// Every job's start and end is logged with its id (`job` metadata), so a log line of a request that
    /// started a job and the job's own lines can be matched up.
    private let logger: Logger

    public init(logger: Logger = Logger(label: "cairn.jobs")) { self.logger = logger }

    /// Registers a running job and returns its id.
    public func start(kind: String, target: String, total: UInt64, unit: String) -> UInt64 {
        let id = state.withLock { s in
            let id = s.nextID
            s.nextID += 1
            s.jobs[id] = JobInfo(
                id: id, kind: kind, target: target, state: .running, done: 0, total: total, unit: unit,
                startedAt: Date(), finishedAt: nil, message: nil)
            return id
        }
        // Logged outside the lock: a log handler writes to a stream.
        logger.info("job started", metadata: ["job": "\(id)", "job.kind": "\(kind)", "job.target": "\(target)"])
        return id
    }

    public func progress(_ id: UInt64, done: UInt64, total: UInt64? = nil) {
        state.withLock { s in
            s.jobs[id]?.done = done
            if let total { s.jobs[id]?.total = total }
        }
    }

    public func finish(_ id: UInt64, _ outcome: JobInfo.State, message: String? = nil) {
        let ended = state.withLock { s -> JobInfo? in
            let ended = s.jobs[id]
            s.jobs[id]?.state = outcome
            s.jobs[id]?.finishedAt = Date()
            s.jobs[id]?.message = message
            s.cancelRequested.remove(id)
            let finished = s.jobs.values.filter { $0.state != .running }.sorted { $0.id < $1.id }
            for old in finished.dropLast(Self.retainedFinishedJobs) { s.jobs[old.id] = nil }
            return ended
        }
        guard let job = ended else { return }
        var metadata: Logger.Metadata = [
            "job": "\(id)", "job.kind": "\(job.kind)", "job.target": "\(job.target)",
            "job.state": "\(outcome.rawValue)", "job.done": "\(job.done)", "job.unit": "\(job.unit)",
            "job.seconds": "\(String(format: "%.3f", Date().timeIntervalSince(job.startedAt)))",
        ]
        if let message { metadata["job.message"] = "\(message)" }
        logger.log(level: outcome == .failed ? .error : .info, "job finished", metadata: metadata)
    }

    /// Runs `body` on a thread of its own named `threadName` and ends `job` with its outcome: the message
    /// it returns on success, cancelled for a closed pool or a cancellation (`EngineError.closed`), failed
    /// otherwise. `owner` stays alive until the thread is done (services hold their pool unowned).
    func runDetached(
        _ job: UInt64, threadName: String, keeping owner: any AnyObject & Sendable, _ body: @escaping @Sendable () throws -> String
    ) {
        let thread = Thread { [self, owner] in
            setCurrentThreadName(threadName)
            withExtendedLifetime(owner) {
                do {
                    finish(job, .succeeded, message: try body())
                } catch let error as EngineError where error.code == .closed {
                    finish(job, .cancelled, message: "\(error)")
                } catch {
                    finish(job, .failed, message: "\(error)")
                }
            }
        }
        thread.start()
    }

    /// Asks a running job to stop at its next checkpoint. Returns false if there is no such running job.
    public func cancel(_ id: UInt64) -> Bool {
        state.withLock { s in
            guard s.jobs[id]?.state == .running else { return false }
            s.cancelRequested.insert(id)
            return true
        }
    }

    public func isCancelled(_ id: UInt64) -> Bool { state.withLock { $0.cancelRequested.contains(id) } }

    public func list() -> [JobInfo] { state.withLock { $0.jobs.values.sorted { $0.id < $1.id } } }

    public func job(_ id: UInt64) -> JobInfo? { state.withLock { $0.jobs[id] } }
}
