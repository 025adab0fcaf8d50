import CairnEngine
import Foundation

/// The phases of one backup as a pure state machine: `BackupRun` and the coordinator's recovery feed it
/// what happened (the split, the freeze, the archive written, a failure, the daemon reopening after a
/// crash) and carry out the actions it returns, in order; an action that does work reports its outcome
/// as the next event. The machine does no I/O and takes no lock, and every change of a backup's record
/// goes through it. Times come in with the events, so a test replays a backup exactly.
struct BackupMachine: Sendable {
    /// What happened to the backup.
    enum Event: Sendable, Hashable {
        /// The run's thread began, under job `jobID`: build the images and split.
        case started(jobID: UInt64)
        /// T: the sessions open now stay on image A.
        case split(at: Date, sessionsOnA: Int)
        /// Image A is frozen and durable ("drained", "sealed" or "timeout").
        case frozen(drain: String, sessionsLeftOnA: [String])
        /// The archive's first byte is about to be written.
        case archiveStarted(at: Date)
        /// The archive is complete and durable.
        case archived(dataBytes: UInt64, archiveBytes: UInt64, seconds: Double)
        /// Image A is gone: the backup is done.
        case discarded(at: Date)
        case failed(message: String, at: Date)
        /// The job was cancelled (it ends failed, the job cancelled).
        case cancelled(message: String, at: Date)
        /// The daemon opened the pool after a crash and found this backup unfinished.
        case reopened(at: Date)
        /// After `reopened`, the images of an archiving backup were found again: archive anew under `jobID`.
        case imagesReopened(jobID: UInt64)
        /// After `reopened`, the images of an archiving backup could not be found again.
        case imagesLost(at: Date)

        /// The event's name, for refusals and logs.
        var name: String {
            switch self {
            case .started: "started"
            case .split: "split"
            case .frozen: "frozen"
            case .archiveStarted: "archiveStarted"
            case .archived: "archived"
            case .discarded: "discarded"
            case .failed: "failed"
            case .cancelled: "cancelled"
            case .reopened: "reopened"
            case .imagesReopened: "imagesReopened"
            case .imagesLost: "imagesLost"
            }
        }
    }

    /// What the run must do, in the order returned.
    enum Action: Sendable, Hashable {
        /// Save the record and publish it to `status`.
        case persist
        /// Build the images and split the sessions at T, then report `split` (or a failure).
        case split
        /// Wait for A to drain, be sealed or time out; freeze it, make it durable, report `frozen`.
        case awaitDrain
        /// Write the archive from frozen A, reporting `archiveStarted`, then `archived`.
        case archive
        /// Drop image A (a live run dissolves it into B first; a resumed archive merges the log or deletes
        /// the images), then report `discarded`.
        case dropImageA
        /// After a restart, with the archive durable: merge the log or delete the image volume left behind.
        case dropImageStorage
        /// Keep the newest backups' T snapshots as incremental bases, delete older ones.
        case dropOlderBases
        /// Log method after a restart: copy B's log into the volume before anything is deleted.
        case mergeLog
        /// Delete what a failed backup leaves: its images, the T snapshot, a partial archive.
        case discardLeftovers
        /// After a restart: find the images of an archiving backup again, report `imagesReopened` or `imagesLost`.
        case reopenImages
        /// End the backup's job.
        case finishJob(JobInfo.State, message: String)
    }

    /// An event the backup's phase does not accept: a bug in the caller, never a user error.
    struct Refusal: Error, Hashable, CustomStringConvertible {
        var phase: BackupRecord.Phase
        var event: String
        var reason: String

        var description: String { "backup \(phase.rawValue): \(event) refused: \(reason)" }
    }

    static let resumedMessage = "archive written again after a daemon restart"

    private(set) var record: BackupRecord

    init(record: BackupRecord) {
        self.record = record
    }

    var phase: BackupRecord.Phase { record.phase }

    /// Takes `event`; returns the actions to carry out, or throws when the phase does not accept it (the
    /// record is then unchanged).
    mutating func handle(_ event: Event) throws(Refusal) -> [Action] {
        guard case .running(let stage) = record.state else {
            throw refusal(event, "the backup has finished")
        }
        switch (stage, event) {
        case (.splitting, .started(let jobID)):
            record.jobID = jobID
            return [.persist, .split]
        case (.splitting, .split(let at, let sessionsOnA)):
            record.state = .running(.draining(.init(at: at, sessionsOnA: sessionsOnA)))
            return [.persist, .awaitDrain]
        case (.draining(let split), .frozen(let drain, let left)):
            let freeze = BackupRecord.Freeze(split: split, drain: drain, sessionsLeftOnA: left)
            record.state = .running(.archiving(.init(freeze: freeze, startedAt: nil, resumed: false)))
            return [.persist, .archive]
        case (.archiving(var archiving), .archiveStarted(let at)):
            archiving.startedAt = at
            record.state = .running(.archiving(archiving))
            return [.persist]
        case (.archiving(let archiving), .archived(let dataBytes, let archiveBytes, let seconds)):
            guard archiving.startedAt != nil else { throw refusal(event, "the archive was never started") }
            let archived = BackupRecord.Archived(
                archiving: archiving, dataBytes: dataBytes, archiveBytes: archiveBytes, seconds: seconds)
            record.state = .running(.discarding(archived))
            return [.persist, .dropImageA]
        case (.discarding(let archived), .discarded(let at)):
            let resumed = archived.archiving.resumed
            record.state = .succeeded(archived, .init(at: at, message: resumed ? Self.resumedMessage : nil))
            let jobMessage =
                resumed ? Self.resumedMessage : "archived \(archived.dataBytes) bytes to \(record.archivePath)"
            return [.dropOlderBases, .persist] + finishJob(.succeeded, jobMessage)
        case (_, .failed(let message, let at)):
            record.state = .failed(stage, .init(at: at, message: message))
            return [.discardLeftovers, .persist] + finishJob(.failed, message)
        case (_, .cancelled(let message, let at)):
            record.state = .failed(stage, .init(at: at, message: message))
            return [.discardLeftovers, .persist] + finishJob(.cancelled, message)
        case (.splitting, .reopened(let at)), (.draining, .reopened(let at)), (.archiving, .imagesLost(let at)):
            return abandon(stage, at: at)
        case (.archiving, .reopened):
            return [.reopenImages]
        case (.archiving(var archiving), .imagesReopened(let jobID)):
            archiving.resumed = true
            record.state = .running(.archiving(archiving))
            record.jobID = jobID
            return [.archive]
        case (.discarding(let archived), .reopened(let at)):
            // The archive is complete and durable: only image A's storage is left to drop.
            record.state = .succeeded(archived, .init(at: at, message: nil))
            return [.dropImageStorage, .dropOlderBases, .persist]
        default:
            throw refusal(event, "not accepted while \(phase.rawValue)")
        }
    }

    /// A backup cut by a crash before A was frozen and durable: its A sessions were cut in the middle of
    /// their work, so A is not a consistent image. Nothing B acknowledged may be lost (the log is merged).
    private mutating func abandon(_ stage: BackupRecord.Stage, at: Date) -> [Action] {
        let message =
            "the daemon stopped while the backup was \(phase.rawValue): the sessions on image A were cut in the "
            + "middle of their work, so A is not a consistent image; the backup was abandoned (the volume has "
            + "every acknowledged write); start a new one"
        record.state = .failed(stage, .init(at: at, message: message))
        return (record.method == .log ? [.mergeLog] : []) + [.discardLeftovers, .persist] + finishJob(.failed, message)
    }

    /// A job to finish, if this run has one (a backup abandoned at open has none).
    private func finishJob(_ outcome: JobInfo.State, _ message: String) -> [Action] {
        record.jobID == nil ? [] : [.finishJob(outcome, message: message)]
    }

    private func refusal(_ event: Event, _ reason: String) -> Refusal {
        Refusal(phase: phase, event: event.name, reason: reason)
    }
}
