@testable import CairnBackup
import CairnEngine
import CairnTestSupport
import Foundation
import Testing

/// Every phase × every event of `BackupMachine`: the next phase and the actions, or the refusal.
@Suite struct BackupMachineTests {
    typealias Action = BackupMachine.Action
    typealias Event = BackupMachine.Event

    static let t0 = Date(timeIntervalSince1970: 1_780_000_000)
    static let split = BackupRecord.Split(at: t0.addingTimeInterval(1), sessionsOnA: 2)
    static let freeze = BackupRecord.Freeze(split: split, drain: "sealed", sessionsLeftOnA: ["3 10.0.0.1:5000"])
    static let archiving = BackupRecord.Archiving(freeze: freeze, startedAt: t0.addingTimeInterval(2), resumed: false)
    static let archived = BackupRecord.Archived(archiving: archiving, dataBytes: 4096, archiveBytes: 5000, seconds: 1.5)
    static let ending = BackupRecord.Ending(at: t0.addingTimeInterval(9), message: nil)

    static func record(_ state: BackupRecord.State, method: BackupMethod = .cow, jobID: UInt64? = 7) -> BackupRecord {
        BackupRecord(
            id: "b1", volume: "vol", volumeID: 1, volumeSize: 1 << 20, method: method, archivePath: "/tmp/b1.cairn",
            snapshot: "backup-b1", imageVolume: "backup-b1-image", startedAt: t0, jobID: jobID, state: state)
    }

    /// One record per phase (running ones with a job, as a live run has).
    static let phases: [(String, BackupRecord.State)] = [
        ("splitting", .running(.splitting)),
        ("draining", .running(.draining(split))),
        ("archiving", .running(.archiving(archiving))),
        ("discarding", .running(.discarding(archived))),
        ("succeeded", .succeeded(archived, ending)),
        ("failed", .failed(.draining(split), .init(at: t0, message: "broken"))),
    ]

    /// One event of each kind.
    static let events: [(String, Event)] = [
        ("started", .started(jobID: 8)),
        ("split", .split(at: t0.addingTimeInterval(1), sessionsOnA: 2)),
        ("frozen", .frozen(drain: "sealed", sessionsLeftOnA: ["3 10.0.0.1:5000"])),
        ("archiveStarted", .archiveStarted(at: t0.addingTimeInterval(3))),
        ("archived", .archived(dataBytes: 4096, archiveBytes: 5000, seconds: 1.5)),
        ("discarded", .discarded(at: t0.addingTimeInterval(9))),
        ("failed", .failed(message: "disk gone", at: t0.addingTimeInterval(9))),
        ("cancelled", .cancelled(message: "the backup was cancelled", at: t0.addingTimeInterval(9))),
        ("reopened", .reopened(at: t0.addingTimeInterval(9))),
        ("imagesReopened", .imagesReopened(jobID: 8)),
        ("imagesLost", .imagesLost(at: t0.addingTimeInterval(9))),
    ]

    static func abandoned(_ phase: String) -> String {
        "the daemon stopped while the backup was \(phase): the sessions on image A were cut in the middle of their "
            + "work, so A is not a consistent image; the backup was abandoned (the volume has every acknowledged "
            + "write); start a new one"
    }

    /// What each phase does with each event: the phase after it and the actions, or nil for a refusal.
    static let table: [String: [String: (BackupRecord.Phase, [Action])?]] = [
        "splitting": [
            "started": (.draining, [.persist, .split]),
            "split": (.draining, [.persist, .awaitDrain]),
            "failed": (.failed, [.discardLeftovers, .persist, .finishJob(.failed, message: "disk gone")]),
            "cancelled": (
                .failed, [.discardLeftovers, .persist, .finishJob(.cancelled, message: "the backup was cancelled")]
            ),
            "reopened": (.failed, [.discardLeftovers, .persist, .finishJob(.failed, message: abandoned("draining"))]),
        ],
        "draining": [
            "frozen": (.archiving, [.persist, .archive]),
            "failed": (.failed, [.discardLeftovers, .persist, .finishJob(.failed, message: "disk gone")]),
            "cancelled": (
                .failed, [.discardLeftovers, .persist, .finishJob(.cancelled, message: "the backup was cancelled")]
            ),
            "reopened": (.failed, [.discardLeftovers, .persist, .finishJob(.failed, message: abandoned("draining"))]),
        ],
        "archiving": [
            "archiveStarted": (.archiving, [.persist]),
            "archived": (.discarding, [.persist, .dropImageA]),
            "failed": (.failed, [.discardLeftovers, .persist, .finishJob(.failed, message: "disk gone")]),
            "cancelled": (
                .failed, [.discardLeftovers, .persist, .finishJob(.cancelled, message: "the backup was cancelled")]
            ),
            "reopened": (.archiving, [.reopenImages]),
            "imagesReopened": (.archiving, [.archive]),
            "imagesLost": (
                .failed, [.discardLeftovers, .persist, .finishJob(.failed, message: abandoned("archiving"))]
            ),
        ],
        "discarding": [
            "discarded": (
                .succeeded,
                [.dropOlderBases, .persist, .finishJob(.succeeded, message: "archived 4096 bytes to /tmp/b1.cairn")]
            ),
            "failed": (.failed, [.discardLeftovers, .persist, .finishJob(.failed, message: "disk gone")]),
            "cancelled": (
                .failed, [.discardLeftovers, .persist, .finishJob(.cancelled, message: "the backup was cancelled")]
            ),
            "reopened": (.succeeded, [.dropImageStorage, .dropOlderBases, .persist]),
        ],
        "succeeded": [:],
        "failed": [:],
    ]

    @Test func everyPhaseAndEvent() {
        for (phaseName, state) in Self.phases {
            for (eventName, event) in Self.events {
                var machine = BackupMachine(record: Self.record(state))
                let before = machine.record
                let expected = Self.table[phaseName]![eventName] ?? nil
                do {
                    let actions = try machine.handle(event)
                    #expect(expected != nil, "\(phaseName) accepted \(eventName)")
                    guard let expected else { continue }
                    #expect(machine.phase == expected.0, "\(phaseName) + \(eventName)")
                    #expect(actions == expected.1, "\(phaseName) + \(eventName)")
                } catch {
                    #expect(expected == nil, "\(phaseName) refused \(eventName): \(error)")
                    #expect(machine.record == before, "a refusal leaves the record as it was")
                    #expect(error.phase == before.phase)
                    let finished = phaseName == "succeeded" || phaseName == "failed"
                    let reason = finished ? "the backup has finished" : "not accepted while \(before.phase.rawValue)"
                    #expect(error.reason == reason && error.event == eventName)
                }
            }
        }
    }

    @Test func aBackupRunsFromSplitToSuccessWithEachPhaseCarryingItsData() throws {
        var machine = BackupMachine(record: Self.record(.running(.splitting), method: .mirror, jobID: nil))
        #expect(machine.phase == .establishing, "the mirror method builds its copy before T")
        _ = try machine.handle(.started(jobID: 8))
        #expect(machine.record.jobID == 8 && machine.record.splitAt == nil)
        _ = try machine.handle(.split(at: Self.split.at, sessionsOnA: 2))
        #expect(machine.phase == .draining && machine.record.splitAt == Self.split.at)
        #expect(machine.record.sessionsAtSplit == 2)
        #expect(machine.record.drain == nil && machine.record.sessionsLeftOnA == nil)
        _ = try machine.handle(.frozen(drain: "timeout", sessionsLeftOnA: []))
        #expect(machine.record.drain == "timeout" && machine.record.sessionsLeftOnA == [])
        #expect(machine.record.archiveStartedAt == nil)
        #expect(throws: BackupMachine.Refusal.self, "an archive that never started cannot be complete") {
            try machine.handle(.archived(dataBytes: 1, archiveBytes: 2, seconds: 3))
        }
        _ = try machine.handle(.archiveStarted(at: Self.t0.addingTimeInterval(5)))
        #expect(machine.record.archiveStartedAt == Self.t0.addingTimeInterval(5) && machine.record.dataBytes == nil)
        _ = try machine.handle(.archived(dataBytes: 1, archiveBytes: 2, seconds: 3))
        #expect(machine.phase == .discarding && machine.record.dataBytes == 1 && machine.record.archiveSeconds == 3)
        _ = try machine.handle(.discarded(at: Self.t0.addingTimeInterval(9)))
        #expect(machine.phase == .succeeded && machine.record.finishedAt == Self.t0.addingTimeInterval(9))
        #expect(machine.record.message == nil && machine.record.resumed == nil)
        #expect(machine.record.splitAt == Self.split.at)
    }

    @Test func aFailedBackupKeepsWhatItHadLearnt() throws {
        var machine = BackupMachine(record: Self.record(.running(.archiving(Self.archiving))))
        _ = try machine.handle(.failed(message: "disk gone", at: Self.t0.addingTimeInterval(9)))
        let ending = BackupRecord.Ending(at: Self.t0.addingTimeInterval(9), message: "disk gone")
        #expect(machine.record.state == .failed(.archiving(Self.archiving), ending))
        #expect(machine.record.drain == "sealed" && machine.record.splitAt == Self.split.at)
        #expect(machine.record.dataBytes == nil)
    }

    @Test func aRestartAbandonsMergesOrResumes() throws {
        // The log method's log is merged before anything is deleted; a backup reopened at start has no job.
        var log = BackupMachine(record: Self.record(.running(.draining(Self.split)), method: .log, jobID: nil))
        #expect(try log.handle(.reopened(at: Self.t0)) == [.mergeLog, .discardLeftovers, .persist])
        #expect(log.record.message == Self.abandoned("draining"))
        var lost = BackupMachine(record: Self.record(.running(.archiving(Self.archiving)), method: .log, jobID: nil))
        #expect(try lost.handle(.reopened(at: Self.t0)) == [.reopenImages])
        #expect(try lost.handle(.imagesLost(at: Self.t0)) == [.mergeLog, .discardLeftovers, .persist])
        #expect(lost.record.message == Self.abandoned("archiving"))

        // Resumed: archived again, the job and the message say so.
        var resumed = BackupMachine(record: Self.record(.running(.archiving(Self.archiving)), jobID: nil))
        _ = try resumed.handle(.reopened(at: Self.t0))
        _ = try resumed.handle(.imagesReopened(jobID: 11))
        #expect(resumed.record.resumed == true && resumed.record.jobID == 11)
        _ = try resumed.handle(.archiveStarted(at: Self.t0))
        _ = try resumed.handle(.archived(dataBytes: 1, archiveBytes: 2, seconds: 3))
        let actions = try resumed.handle(.discarded(at: Self.t0))
        #expect(actions == [.dropOlderBases, .persist, .finishJob(.succeeded, message: BackupMachine.resumedMessage)])
        #expect(resumed.record.message == BackupMachine.resumedMessage)

        // Discarding at open: A's storage only; no message, no job.
        var discarding = BackupMachine(record: Self.record(.running(.discarding(Self.archived)), jobID: nil))
        #expect(try discarding.handle(.reopened(at: Self.t0)) == [.dropImageStorage, .dropOlderBases, .persist])
        #expect(discarding.record.message == nil && discarding.phase == .succeeded)
    }
}
