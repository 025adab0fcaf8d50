/// The primary's link to its target as a pure state machine: establish and re-establish, failures, the
/// resync and verify jobs, sever, pause, stop and remove go in; the actions `PrimaryMirror` must carry out
/// come out. No I/O and no locks: `PrimaryMirror` feeds it under its state lock.
///
/// The link epoch lives here: work remembers the epoch it started under, and a failure it reports after
/// the mirror was re-established (a retry or resync of the previous link winding down) is an event the
/// machine ignores. Once the daemon stops, failures are the shutdown's and change nothing (a mirror linked
/// at shutdown resumes at the next start); once removed, the mirror is not linked at all.
///
/// | state \ event | linked        | linkFailed(current) | resyncNeeded            | resyncCompleted(true) |
/// |---------------|---------------|---------------------|-------------------------|-----------------------|
/// | synchronizing | synchronizing | fractured, recorded | a resync if none runs   | mirrored              |
/// | mirrored      | synchronizing | fractured, recorded | synchronizing, a resync | —                     |
/// | fractured     | synchronizing | —                   | —                       | —                     |
/// | severed       | synchronizing | —                   | —                       | —                     |
///
/// `paused(as:)` moves any state to fractured or severed (a cancelled resync, a sever, a failed take);
/// `jobFailed` ends the job and fractures (or pauses, for a cancelled resync) under the same epoch rule.
public struct MirrorLinkMachine: Sendable, Equatable {
    public typealias State = PrimaryMirrorRecord.State

    /// The daemon's hold on the mirror.
    public enum Lifecycle: Sendable, Equatable {
        case running
        /// The daemon is stopping: failures from here on change no state.
        case stopping
        /// `cairn mirror remove` ran: nothing is sent or recorded any more.
        case removed
    }

    /// The one job a link runs at a time.
    public enum Job: Sendable, Equatable {
        case resync
        case verify
    }

    public enum Event: Sendable, Equatable {
        /// Establish or re-establish opened a connection the target accepted: a new link.
        case linked
        /// The target failed for work begun under `epoch` (nil: under whatever link is current).
        case linkFailed(epoch: UInt64?)
        /// Stops linking without an error (a cancelled resync, a sever, a take that could not start).
        case paused(as: State)
        /// The operator severs: writes are tracked instead of sent from now on, before the target hears it.
        case severing
        /// Extents are dirty: they must be copied.
        case resyncNeeded
        /// `cairn mirror verify`.
        case verifyRequested
        /// The resync copied everything it saw; `inSync`: no dirty extent left and no fracture since it began.
        case resyncCompleted(inSync: Bool)
        /// The job ended without an error.
        case jobEnded
        /// The job failed under `epoch`; `cancelled`: by the operator.
        case jobFailed(epoch: UInt64, cancelled: Bool)
        case stop
        case remove
    }

    public enum Action: Sendable, Equatable {
        /// Keep the connection the establish opened as the link's.
        case installConnection
        /// Close the current connection and forget it.
        case closeConnection
        /// The link failed: a new generation and the activity log's extents dirty, durably; log and alert.
        case recordFracture
        /// Stopped without an error: a new generation and the map durable, no alert.
        case recordPause
        /// The mirror is in sync again: the last error is history.
        case clearLastError
        case startResync
        case startVerify
        /// Cancel the running job.
        case cancelJob
    }

    public private(set) var state: State
    /// Incremented by every `linked`.
    public private(set) var epoch: UInt64 = 0
    public private(set) var lifecycle: Lifecycle = .running
    public private(set) var job: Job?

    public init(state: State) { self.state = state }

    /// A machine in any state (tests).
    init(state: State, epoch: UInt64, lifecycle: Lifecycle = .running, job: Job? = nil) {
        self.state = state
        self.epoch = epoch
        self.lifecycle = lifecycle
        self.job = job
    }

    /// Writes go to the target (synchronizing or mirrored); otherwise they are only tracked.
    public var isLinked: Bool { lifecycle != .removed && (state == .mirrored || state == .synchronizing) }

    public mutating func handle(_ event: Event) -> [Action] {
        switch event {
        case .linked:
            guard lifecycle == .running else { return [.closeConnection] }
            epoch += 1
            state = .synchronizing
            return [.installConnection]
        case .linkFailed(let failedEpoch):
            return fracture(failedEpoch)
        case .paused(let final):
            state = final
            return [.closeConnection, .recordPause]
        case .severing:
            state = .severed
            return []
        case .resyncNeeded:
            guard lifecycle == .running, job == nil, isLinked else { return [] }
            state = .synchronizing
            job = .resync
            return [.startResync]
        case .verifyRequested:
            guard lifecycle == .running, job == nil, state == .mirrored, isLinked else { return [] }
            job = .verify
            return [.startVerify]
        case .resyncCompleted(let inSync):
            guard state == .synchronizing, inSync else { return [] }
            state = .mirrored
            return [.clearLastError]
        case .jobEnded:
            job = nil
            // Extents changed while it ran: one more pass.
            guard lifecycle == .running, state == .synchronizing else { return [] }
            job = .resync
            return [.startResync]
        case .jobFailed(let failedEpoch, let cancelled):
            let ended = job
            job = nil
            guard lifecycle == .running else { return [] }
            if cancelled {
                // A cancelled resync leaves the mirror paused until re-establish; a cancelled verify changes nothing.
                guard ended == .resync else { return [] }
                return handle(.paused(as: .fractured))
            }
            return fracture(failedEpoch)
        case .stop:
            if lifecycle == .running { lifecycle = .stopping }
            return [.cancelJob, .closeConnection]
        case .remove:
            lifecycle = .removed
            return [.cancelJob, .closeConnection]
        }
    }

    private mutating func fracture(_ failedEpoch: UInt64?) -> [Action] {
        if let failedEpoch, failedEpoch != epoch { return [] }
        guard lifecycle == .running, isLinked else { return [] }
        state = .fractured
        return [.closeConnection, .recordFracture]
    }
}
