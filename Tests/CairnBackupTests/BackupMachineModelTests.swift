@testable import CairnBackup
import CairnTestSupport
import Foundation
import Testing

/// Random event sequences through `BackupMachine`, checked against a reference model kept the way the
/// record used to be kept: one flat struct whose fields the steps assign. After every event both agree
/// on whether it was accepted, and the machine's record, written to disk, is the model's field for field.
@Suite struct BackupMachineModelTests {
    /// The flat record and the assignments each step used to make; decoded from the JSON on disk too (its
    /// varying fields), to compare with what the machine wrote.
    struct FlatModel: Decodable, Equatable {
        var phase: BackupRecord.Phase
        var jobID: UInt64?
        var splitAt: Date?
        var sessionsAtSplit: Int?
        var drain: String?
        var sessionsLeftOnA: [String]?
        var archiveStartedAt: Date?
        var dataBytes: UInt64?
        var archiveBytes: UInt64?
        var archiveSeconds: Double?
        var finishedAt: Date?
        var message: String?
        var resumed: Bool?

        var isFinished: Bool { phase == .succeeded || phase == .failed }
        var beforeSplit: Bool { (phase == .establishing || phase == .draining) && splitAt == nil }

        mutating func fail(_ text: String, _ at: Date) {
            phase = .failed
            finishedAt = at
            message = text
        }

        mutating func abandon(_ at: Date) {
            fail(
                "the daemon stopped while the backup was \(phase.rawValue): the sessions on image A were cut in the "
                    + "middle of their work, so A is not a consistent image; the backup was abandoned (the volume "
                    + "has every acknowledged write); start a new one", at)
        }

        /// Applies `event`; false when the backup could not have taken it.
        mutating func apply(_ event: BackupMachine.Event) -> Bool {
            guard !isFinished else { return false }
            switch event {
            case .started(let job):
                guard beforeSplit else { return false }
                jobID = job
            case .split(let at, let sessions):
                guard beforeSplit else { return false }
                (phase, splitAt, sessionsAtSplit) = (.draining, at, sessions)
            case .frozen(let outcome, let left):
                guard phase == .draining, splitAt != nil else { return false }
                (phase, drain, sessionsLeftOnA) = (.archiving, outcome, left)
            case .archiveStarted(let at):
                guard phase == .archiving else { return false }
                archiveStartedAt = at
            case .archived(let data, let file, let seconds):
                guard phase == .archiving, archiveStartedAt != nil else { return false }
                (phase, dataBytes, archiveBytes, archiveSeconds) = (.discarding, data, file, seconds)
            case .discarded(let at):
                guard phase == .discarding else { return false }
                (phase, finishedAt) = (.succeeded, at)
                if resumed == true { message = "archive written again after a daemon restart" }
            case .failed(let text, let at), .cancelled(let text, let at):
                fail(text, at)
            case .reopened(let at):
                switch phase {
                case .establishing, .draining: abandon(at)
                case .archiving: break
                default: (phase, finishedAt) = (.succeeded, at)
                }
            case .imagesReopened(let job):
                guard phase == .archiving else { return false }
                (resumed, jobID) = (true, job)
            case .imagesLost(let at):
                guard phase == .archiving else { return false }
                abandon(at)
            }
            return true
        }
    }

    static func randomEvent(_ random: inout SeededGenerator, clock: inout Int) -> BackupMachine.Event {
        clock += Int.random(in: 0...3, using: &random)
        let at = Date(timeIntervalSince1970: 1_780_000_000 + Double(clock))
        let job = UInt64.random(in: 1...50, using: &random)
        // Steps forward come more often than endings, so sequences reach the later phases.
        let weights = [2, 3, 3, 3, 3, 3, 1, 1, 1, 2, 1]
        var pick = random.next(weights.reduce(0, +))
        var kind = 0
        while pick >= weights[kind] {
            pick -= weights[kind]
            kind += 1
        }
        switch kind {
        case 0: return .started(jobID: job)
        case 1: return .split(at: at, sessionsOnA: random.next(4))
        case 2:
            let left = (0..<random.next(3)).map { "\($0) 10.0.0.\($0):5000" }
            return .frozen(drain: ["drained", "sealed", "timeout"][random.next(3)], sessionsLeftOnA: left)
        case 3: return .archiveStarted(at: at)
        case 4:
            return .archived(
                dataBytes: UInt64(random.next(1 << 20)), archiveBytes: UInt64(random.next(1 << 20)),
                seconds: Double(random.next(400)) / 4)
        case 5: return .discarded(at: at)
        case 6: return .failed(message: "error \(random.next(100))", at: at)
        case 7: return .cancelled(message: "the backup was cancelled", at: at)
        case 8: return .reopened(at: at)
        case 9: return .imagesReopened(jobID: job)
        default: return .imagesLost(at: at)
        }
    }

    @Test func randomSequencesAgreeWithTheFlatModel() throws {
        let seed = TestSeed.make()
        print("BackupMachineModelTests seed: \(seed) (CAIRN_SEED=\(seed) replays it)")
        var random = SeededGenerator(seed: seed)
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        var reached: Set<BackupRecord.Phase> = []
        for round in 0..<500 {
            let method = BackupMethod.allCases[random.next(BackupMethod.allCases.count)]
            let start = BackupMachineTests.record(.running(.splitting), method: method, jobID: nil)
            var machine = BackupMachine(record: start)
            var model = FlatModel(phase: machine.phase)
            var clock = 0
            for step in 0..<Int.random(in: 1...30, using: &random) {
                let event = Self.randomEvent(&random, clock: &clock)
                let before = machine.record
                let accepted: Bool
                do {
                    let actions = try machine.handle(event)
                    accepted = true
                    // Every change of what is on disk is persisted, but the resumed flag and the new job,
                    // which the archive's start records before anything else can happen.
                    var resumes = false
                    if case .imagesReopened = event { resumes = true }
                    if machine.record != before && !resumes {
                        #expect(actions.contains(.persist), "seed \(seed) round \(round) step \(step): \(event)")
                    }
                } catch {
                    accepted = false
                    #expect(machine.record == before)
                }
                let modelAccepted = model.apply(event)
                reached.insert(model.phase)
                #expect(
                    accepted == modelAccepted,
                    "seed \(seed) round \(round) step \(step): \(event) while \(before.phase)")
                guard accepted == modelAccepted else { break }
                let written = try BackupRecordStore.encode(machine.record)
                let flat = try decoder.decode(FlatModel.self, from: written)
                #expect(flat == model, "seed \(seed) round \(round) step \(step): \(event)")
                guard flat == model else { break }
            }
        }
        #expect(reached == Set(BackupRecord.Phase.allCases), "seed \(seed): the sequences reach every phase")
    }
}
