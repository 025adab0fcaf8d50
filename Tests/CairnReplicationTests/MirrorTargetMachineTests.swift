import CairnTestSupport
import Foundation
import MirrorProtocol
import Testing

@testable import CairnReplication

/// Every state of a target pairing against every event: the next state and the actions, or the refusal.
@Suite("mirror target machine")
struct MirrorTargetMachineTests {
    typealias Action = MirrorTargetMachine.Action
    typealias Event = MirrorTargetMachine.Event

    static let volume: UInt64 = 7
    /// The paired record's generation; establish requests below name it as synced (or not).
    static let held: UInt64 = 5
    /// A promotion's fresh generation, and an earlier one.
    static let promotion: UInt64 = 0xAB
    static let earlier: UInt64 = 0xCD

    /// nil: the volume is not paired.
    static let states: [TargetMirrorState?] = [
        nil, .mirroring, .severed(modified: false), .severed(modified: true),
        .promoted(generation: earlier, modified: false), .promoted(generation: earlier, modified: true), .takingChanges,
        .takeInterrupted(promotedGeneration: nil, writtenDuringTake: false),
        .takeInterrupted(promotedGeneration: nil, writtenDuringTake: true),
        .takeInterrupted(promotedGeneration: earlier, writtenDuringTake: false),
        .takeInterrupted(promotedGeneration: earlier, writtenDuringTake: true),
    ]

    static func record(_ state: TargetMirrorState, generation: UInt64 = held, pair: UInt64 = 1) -> TargetMirrorRecord {
        TargetMirrorRecord(volumeID: volume, pairID: pair, generation: generation, primaryNode: "p", state: state)
    }

    static func machine(_ state: TargetMirrorState?) -> MirrorTargetMachine {
        MirrorTargetMachine(volumeID: volume, record: state.map { record($0) })
    }

    enum Establish: CaseIterable {
        /// Same pair, a generation the target holds, no choice.
        case resume, take, discard, initial, otherPair, unknownGeneration, takeAndDiscard

        var event: Event {
            var pair: UInt64 = 1
            var synced = MirrorTargetMachineTests.held
            var options: MirrorEstablishRequest.Options = [.create]
            switch self {
            case .resume: break
            case .take: options.insert(.takeTargetChanges)
            case .discard: options.insert(.discardTargetChanges)
            case .initial: options.insert(.initial)
            case .otherPair: pair = 2
            case .unknownGeneration: synced = 6
            case .takeAndDiscard: options.formUnion([.takeTargetChanges, .discardTargetChanges])
            }
            return .establish(
                MirrorTargetMachine.Establish(
                    volume: "dst", generations: MirrorGenerations(pairID: pair, synced: synced, current: 9),
                    options: options, node: "p", created: false, allocatedBytes: 0))
        }
    }

    enum Expected: Equatable {
        case next(TargetMirrorState?, [Action])
        case refused(MirrorRemoteError.Code)
    }

    /// The pairing after an accepted establish: the record's generation is the request's synced one.
    static func paired(_ state: TargetMirrorState, fullSync: Bool, keep: Bool = false) -> Expected {
        .next(
            state,
            [.saveRecord(record(state))] + (keep ? [] : [.removeChangeMap])
                + [.takeOwnership, .answerEstablish(fullSyncNeeded: fullSync)])
    }

    static func expected(_ state: TargetMirrorState?, _ establish: Establish) -> Expected {
        guard let state else {
            // The volume exists here but holds no record of this pair.
            switch establish {
            case .takeAndDiscard: return .refused(.invalidArgument)
            case .discard, .initial: return paired(.mirroring, fullSync: true)
            default: return .refused(.diverged)
            }
        }
        let changed = record(state).changedHere
        switch establish {
        case .takeAndDiscard: return .refused(.invalidArgument)
        case .otherPair: return .refused(.volumeInUse)
        case .unknownGeneration: return .refused(.diverged)
        case .initial: return paired(.mirroring, fullSync: true)
        case .discard: return paired(.mirroring, fullSync: changed)
        case .resume: return changed ? .refused(.targetChanged) : paired(.mirroring, fullSync: false)
        case .take:
            if record(state).writtenDuringTake { return .refused(.diverged) }
            return changed ? paired(.takingChanges, fullSync: false, keep: true) : paired(.mirroring, fullSync: false)
        }
    }

    @Test("establish, in every state, with every choice")
    func establishTable() {
        for state in Self.states {
            for establish in Establish.allCases {
                var machine = Self.machine(state)
                let outcome = machine.handle(establish.event)
                let expected = Self.expected(state, establish)
                switch expected {
                case .refused(let code):
                    guard case .refused(let error) = outcome else {
                        Issue.record("\(String(describing: state)) + \(establish): \(outcome), expected \(expected)")
                        continue
                    }
                    #expect(error.code == code, "\(String(describing: state)) + \(establish): \(error)")
                    #expect(machine == Self.machine(state), "a refusal changes nothing")
                case .next(let next, let actions):
                    #expect(outcome == .accepted(actions), "\(String(describing: state)) + \(establish)")
                    #expect(machine.record?.state == next, "\(String(describing: state)) + \(establish)")
                }
            }
        }
    }

    /// The other events: one row per state, in the order of `states`.
    static func expected(_ state: TargetMirrorState?, _ event: Event) -> Expected {
        let synced: UInt64 = 0x51
        func to(
            _ next: TargetMirrorState, generation: UInt64 = held, before: [Action] = [], after: [Action] = []
        )
            -> Expected
        {
            .next(next, before + [.saveRecord(record(next, generation: generation))] + after)
        }
        func same(_ actions: [Action]) -> Expected { .next(state, actions) }
        let removed = Expected.next(nil, [.removeRecord, .removeChangeMap, .releaseOwnership])
        switch (state, event) {
        case (nil, .synchronized), (nil, .sever), (nil, .remove): return .refused(.badAddress)
        case (nil, .hostWrite): return same([])
        case (nil, .promote): return .refused(.unknownVolume)

        case (.mirroring, .synchronized): return to(.mirroring, generation: synced, after: [.removeChangeMap])
        case (.mirroring, .sever): return to(.severed(modified: false), after: [.releaseOwnership])
        case (.mirroring, .hostWrite): return .refused(.volumeInUse)
        case (.mirroring, .promote):
            return to(
                .promoted(generation: promotion, modified: false), before: [.createChangeMap],
                after: [.releaseOwnership])

        case (.severed, .synchronized): return .refused(.badAddress)
        case (.severed, .sever): return same([.releaseOwnership])
        case (.severed(false), .hostWrite): return to(.severed(modified: true), before: [.markExtentsDirty])
        case (.severed(true), .hostWrite): return same([.markExtentsDirty])
        case (.severed(let modified), .promote):
            return to(
                .promoted(generation: promotion, modified: modified), before: [.createChangeMap],
                after: [.releaseOwnership])

        case (.promoted, .synchronized): return .refused(.targetChanged)
        case (.promoted, .sever): return same([.releaseOwnership])
        case (.promoted(let generation, false), .hostWrite):
            return to(.promoted(generation: generation, modified: true), before: [.markExtentsDirty])
        case (.promoted(_, true), .hostWrite): return same([.markExtentsDirty])
        case (.promoted, .promote): return same([])

        case (.takingChanges, .synchronized): return to(.mirroring, generation: synced, after: [.removeChangeMap])
        case (.takingChanges, .sever):
            return to(.takeInterrupted(promotedGeneration: nil, writtenDuringTake: false), after: [.releaseOwnership])
        case (.takingChanges, .hostWrite): return .refused(.volumeInUse)
        case (.takingChanges, .promote):
            return to(
                .takeInterrupted(promotedGeneration: promotion, writtenDuringTake: false), before: [.createChangeMap],
                after: [.releaseOwnership])

        case (.takeInterrupted(nil, _), .synchronized): return .refused(.badAddress)
        case (.takeInterrupted(_?, _), .synchronized): return .refused(.targetChanged)
        case (.takeInterrupted, .sever): return same([.releaseOwnership])
        case (.takeInterrupted(let generation, false), .hostWrite):
            return to(
                .takeInterrupted(promotedGeneration: generation, writtenDuringTake: true), before: [.markExtentsDirty])
        case (.takeInterrupted(_, true), .hostWrite): return same([.markExtentsDirty])
        case (.takeInterrupted(nil, let written), .promote):
            return to(
                .takeInterrupted(promotedGeneration: promotion, writtenDuringTake: written), before: [.createChangeMap],
                after: [.releaseOwnership])
        case (.takeInterrupted(_?, _), .promote): return same([])

        case (_?, .remove): return removed
        case (_, .establish): preconditionFailure("establishTable covers establish")
        }
    }

    @Test("synchronized, sever, remove, host write and promote, in every state")
    func eventTable() {
        let events: [Event] = [
            .synchronized(generation: 0x51), .sever, .remove, .hostWrite, .promote(generation: Self.promotion),
        ]
        for state in Self.states {
            for event in events {
                var machine = Self.machine(state)
                let outcome = machine.handle(event)
                switch Self.expected(state, event) {
                case .refused(let code):
                    guard case .refused(let error) = outcome else {
                        Issue.record("\(String(describing: state)) + \(event): \(outcome), expected a refusal \(code)")
                        continue
                    }
                    #expect(error.code == code, "\(String(describing: state)) + \(event): \(error)")
                    #expect(machine == Self.machine(state), "a refusal changes nothing")
                case .next(let next, let actions):
                    #expect(outcome == .accepted(actions), "\(String(describing: state)) + \(event)")
                    #expect(machine.record?.state == next, "\(String(describing: state)) + \(event)")
                    let saves = actions.filter { if case .saveRecord = $0 { true } else { false } }
                    #expect(saves.count <= 1, "one save per transition")
                    if let saved = saves.first, case .saveRecord(let record) = saved {
                        #expect(record == machine.record, "the saved record is the new state")
                    }
                }
            }
        }
    }

    @Test("an establish on a volume it created: a fresh pairing, holes need not be sent")
    func createdVolume() {
        var machine = Self.machine(nil)
        let outcome = machine.handle(
            .establish(
                MirrorTargetMachine.Establish(
                    volume: "dst", generations: MirrorGenerations(pairID: 3, synced: 0, current: 9),
                    options: [.create, .initial], node: "p", created: true, allocatedBytes: 0)))
        let paired = TargetMirrorRecord(
            volumeID: Self.volume, pairID: 3, generation: 0, primaryNode: "p", state: .mirroring)
        #expect(
            outcome
                == .accepted([
                    .saveRecord(paired), .removeChangeMap, .takeOwnership, .answerEstablish(fullSyncNeeded: false),
                ]))
        // An initial establish onto a volume that holds data needs the discard.
        var existing = Self.machine(nil)
        let refused = existing.handle(
            .establish(
                MirrorTargetMachine.Establish(
                    volume: "dst", generations: MirrorGenerations(pairID: 3, synced: 0, current: 9),
                    options: [.create, .initial], node: "p", created: false, allocatedBytes: 4096)))
        guard case .refused(let error) = refused else {
            Issue.record("\(refused)")
            return
        }
        #expect(error.code == .volumeInUse)
    }
}

/// Random sequences of events against a reference model that keeps the record as the flags it is
/// stored as: both must agree on every refusal and every record, and every record survives its JSON.
@Suite("mirror target machine against the flag model")
struct MirrorTargetMachineModelTests {
    /// The target record as flags, changed the way the target changed them before it had states.
    struct FlagModel: Equatable {
        var paired = false
        var pairID: UInt64 = 0
        var generation: UInt64 = 0
        var modified = false
        var severed = false
        var promotedGeneration: UInt64?
        var takeInProgress = false
        var writtenDuringTake = false

        var changedHere: Bool { modified || promotedGeneration != nil }

        /// Applies the event; false when the target refuses it.
        mutating func apply(_ event: MirrorTargetMachine.Event) -> Bool {
            switch event {
            case .establish(let request):
                let take = request.options.contains(.takeTargetChanges)
                let discard = request.options.contains(.discardTargetChanges)
                if take && discard { return false }
                var keep = false
                if paired {
                    if pairID != request.generations.pairID {
                        if !discard { return false }
                    } else if !request.options.contains(.initial) {
                        let known =
                            generation == request.generations.synced || generation == request.generations.current
                        if !known && !discard { return false }
                        if changedHere && !discard && !take { return false }
                        if take && writtenDuringTake { return false }
                        keep = take && changedHere
                    }
                } else if !request.created {
                    if !request.options.contains(.initial) && !discard { return false }
                    if request.options.contains(.initial) && request.allocatedBytes > 0 && !discard { return false }
                }
                self = FlagModel(
                    paired: true, pairID: request.generations.pairID, generation: request.generations.synced,
                    modified: keep, severed: false, takeInProgress: keep)
            case .synchronized(let value):
                guard paired, !severed else { return false }
                generation = value
                modified = false
                promotedGeneration = nil
                takeInProgress = false
                writtenDuringTake = false
            case .sever:
                guard paired else { return false }
                severed = true
            case .remove:
                guard paired else { return false }
                self = FlagModel()
            case .hostWrite:
                guard paired else { return true }
                guard severed else { return false }
                modified = true
                if takeInProgress { writtenDuringTake = true }
            case .promote(let value):
                guard paired else { return false }
                if promotedGeneration == nil { promotedGeneration = value }
                severed = true
            }
            return true
        }

        func matches(_ record: TargetMirrorRecord?) -> Bool {
            guard let record else { return !paired }
            return paired && record.pairID == pairID && record.generation == generation && record.modified == modified
                && record.severed == severed && record.promotedGeneration == promotedGeneration
                && record.takeInProgress == takeInProgress && record.writtenDuringTake == writtenDuringTake
        }
    }

    static func randomEvent(_ random: inout SeededGenerator) -> MirrorTargetMachine.Event {
        switch random.next(8) {
        case 0, 1:
            var options: MirrorEstablishRequest.Options = [.create]
            for option in [MirrorEstablishRequest.Options.takeTargetChanges, .discardTargetChanges, .initial]
            where random.next(3) == 0 { options.insert(option) }
            // Mostly the pair and generations in use, sometimes others.
            let pair = UInt64(1 + random.next(8) / 7)
            let synced = UInt64(random.next(4))
            return .establish(
                MirrorTargetMachine.Establish(
                    volume: "dst",
                    generations: MirrorGenerations(pairID: pair, synced: synced, current: UInt64(random.next(4))),
                    options: options, node: "p", created: random.next(6) == 0, allocatedBytes: UInt64(random.next(2))))
        case 2: return .synchronized(generation: UInt64(random.next(4)))
        case 3: return .sever
        case 4: return random.next(4) == 0 ? .remove : .sever
        case 5, 6: return .hostWrite
        default: return .promote(generation: UInt64(1 + random.next(1000)))
        }
    }

    @Test("random event sequences agree with the flag model", arguments: [TestSeed.make()])
    func randomSequences(seed: UInt64) throws {
        var random = SeededGenerator(seed: seed)
        for sequence in 0..<200 {
            var machine = MirrorTargetMachine(volumeID: 7, record: nil)
            var model = FlagModel()
            var trace: [MirrorTargetMachine.Event] = []
            for _ in 0..<40 {
                let event = Self.randomEvent(&random)
                trace.append(event)
                let before = machine
                let accepted = model.apply(event)
                let outcome = machine.handle(event)
                if case .refused = outcome {
                    #expect(!accepted, "seed \(seed), sequence \(sequence): the model accepts \(trace)")
                    #expect(machine == before, "seed \(seed): a refusal changed the machine")
                } else {
                    #expect(accepted, "seed \(seed), sequence \(sequence): the machine accepts \(trace)")
                }
                guard model.matches(machine.record) else {
                    Issue.record(
                        "seed \(seed), sequence \(sequence): \(String(describing: machine.record)) vs \(model) after \(trace)"
                    )
                    return
                }
                if let record = machine.record {
                    let data = try JSONEncoder().encode(record)
                    #expect(try JSONDecoder().decode(TargetMirrorRecord.self, from: data) == record, "seed \(seed)")
                }
            }
        }
    }
}
