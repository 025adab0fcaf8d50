import CairnTestSupport
import Testing

@testable import CairnReplication

/// The primary's link machine: every state (link state, job, lifecycle) against every event.
@Suite("mirror link machine")
struct MirrorLinkMachineTests {
    typealias Machine = MirrorLinkMachine
    typealias Event = MirrorLinkMachine.Event
    typealias Action = MirrorLinkMachine.Action
    typealias State = PrimaryMirrorRecord.State

    /// The current link's epoch in these tests; 0 is an older link's.
    static let current: UInt64 = 1
    static let states: [State] = [.synchronizing, .mirrored, .fractured, .severed]
    static let events: [Event] = [
        .linked, .linkFailed(epoch: current), .linkFailed(epoch: 0), .linkFailed(epoch: nil), .paused(as: .fractured),
        .paused(as: .severed), .severing, .resyncNeeded, .verifyRequested, .resyncCompleted(inSync: true),
        .resyncCompleted(inSync: false), .jobEnded, .jobFailed(epoch: current, cancelled: false),
        .jobFailed(epoch: current, cancelled: true), .jobFailed(epoch: 0, cancelled: false), .stop, .remove,
    ]

    struct Row {
        var from: State
        var job: Machine.Job?
        var event: Event
        var to: State
        var epoch: UInt64 = MirrorLinkMachineTests.current
        var nextJob: Machine.Job?
        var lifecycle: Machine.Lifecycle = .running
        var actions: [Action]
    }

    /// Running, no job: the expected transition of each event, written out per state.
    static func rowsWithoutJob() -> [Row] {
        var rows: [Row] = []
        for from in states {
            let linked = from == .synchronizing || from == .mirrored
            let fracture: (State, [Action]) = linked ? (.fractured, [.closeConnection, .recordFracture]) : (from, [])
            rows += [
                Row(from: from, event: .linked, to: .synchronizing, epoch: 2, actions: [.installConnection]),
                Row(from: from, event: .linkFailed(epoch: current), to: fracture.0, actions: fracture.1),
                Row(from: from, event: .linkFailed(epoch: 0), to: from, actions: []),
                Row(from: from, event: .linkFailed(epoch: nil), to: fracture.0, actions: fracture.1),
                Row(
                    from: from, event: .paused(as: .fractured), to: .fractured,
                    actions: [.closeConnection, .recordPause]),
                Row(from: from, event: .paused(as: .severed), to: .severed, actions: [.closeConnection, .recordPause]),
                Row(from: from, event: .severing, to: .severed, actions: []),
                linked
                    ? Row(
                        from: from, event: .resyncNeeded, to: .synchronizing, nextJob: .resync, actions: [.startResync])
                    : Row(from: from, event: .resyncNeeded, to: from, actions: []),
                from == .mirrored
                    ? Row(from: from, event: .verifyRequested, to: from, nextJob: .verify, actions: [.startVerify])
                    : Row(from: from, event: .verifyRequested, to: from, actions: []),
                from == .synchronizing
                    ? Row(from: from, event: .resyncCompleted(inSync: true), to: .mirrored, actions: [.clearLastError])
                    : Row(from: from, event: .resyncCompleted(inSync: true), to: from, actions: []),
                Row(from: from, event: .resyncCompleted(inSync: false), to: from, actions: []),
                from == .synchronizing
                    ? Row(from: from, event: .jobEnded, to: from, nextJob: .resync, actions: [.startResync])
                    : Row(from: from, event: .jobEnded, to: from, actions: []),
                Row(
                    from: from, event: .jobFailed(epoch: current, cancelled: false), to: fracture.0, actions: fracture.1
                ),
                // No job was running: a cancellation changes nothing.
                Row(from: from, event: .jobFailed(epoch: current, cancelled: true), to: from, actions: []),
                Row(from: from, event: .jobFailed(epoch: 0, cancelled: false), to: from, actions: []),
                Row(from: from, event: .stop, to: from, lifecycle: .stopping, actions: [.cancelJob, .closeConnection]),
                Row(
                    from: from, event: .remove, to: from, lifecycle: .removed, actions: [.cancelJob, .closeConnection]),
            ]
        }
        return rows
    }

    /// Running with a job: the events whose outcome depends on it.
    static func rowsWithJob() -> [Row] {
        var rows: [Row] = []
        for from in states {
            let linked = from == .synchronizing || from == .mirrored
            let fracture: (State, [Action]) = linked ? (.fractured, [.closeConnection, .recordFracture]) : (from, [])
            for job in [Machine.Job.resync, .verify] {
                rows += [
                    Row(from: from, job: job, event: .resyncNeeded, to: from, nextJob: job, actions: []),
                    Row(from: from, job: job, event: .verifyRequested, to: from, nextJob: job, actions: []),
                    from == .synchronizing
                        ? Row(
                            from: from, job: job, event: .jobEnded, to: from, nextJob: .resync, actions: [.startResync])
                        : Row(from: from, job: job, event: .jobEnded, to: from, actions: []),
                    Row(
                        from: from, job: job, event: .jobFailed(epoch: current, cancelled: false), to: fracture.0,
                        actions: fracture.1),
                    Row(from: from, job: job, event: .jobFailed(epoch: 0, cancelled: false), to: from, actions: []),
                    job == .resync
                        ? Row(
                            from: from, job: job, event: .jobFailed(epoch: current, cancelled: true), to: .fractured,
                            actions: [.closeConnection, .recordPause])
                        : Row(
                            from: from, job: job, event: .jobFailed(epoch: current, cancelled: true), to: from,
                            actions: []),
                ]
            }
        }
        return rows
    }

    static func check(_ row: Row) {
        var machine = Machine(state: row.from, epoch: current, job: row.job)
        let actions = machine.handle(row.event)
        let label = "\(row.from), job \(String(describing: row.job)), \(row.event)"
        #expect(actions == row.actions, "\(label)")
        #expect(machine.state == row.to, "\(label)")
        #expect(machine.epoch == row.epoch, "\(label)")
        #expect(machine.job == row.nextJob, "\(label)")
        #expect(machine.lifecycle == row.lifecycle, "\(label)")
    }

    @Test("running, without a job: every state and event")
    func withoutJob() {
        let rows = Self.rowsWithoutJob()
        #expect(rows.count == Self.states.count * Self.events.count)
        for row in rows { Self.check(row) }
    }

    @Test("running, with a resync or verify: the events the job changes, and the others keep it")
    func withJob() {
        for row in Self.rowsWithJob() { Self.check(row) }
        let jobEvents: Set<String> = ["resyncNeeded", "verifyRequested", "jobEnded", "jobFailed"]
        for row in Self.rowsWithoutJob() where !jobEvents.contains(where: { "\(row.event)".hasPrefix($0) }) {
            for job in [Machine.Job.resync, .verify] {
                var withJob = row
                withJob.job = job
                withJob.nextJob = row.nextJob ?? job
                Self.check(withJob)
            }
        }
    }

    @Test("stopping or removed: failures change nothing, nothing starts, a removed mirror is not linked")
    func stoppingAndRemoved() {
        for lifecycle in [Machine.Lifecycle.stopping, .removed] {
            for from in Self.states {
                for job in [nil, Machine.Job.resync] {
                    for event in Self.events {
                        var machine = Machine(state: from, epoch: Self.current, lifecycle: lifecycle, job: job)
                        let actions = machine.handle(event)
                        let label = "\(lifecycle), \(from), \(event)"
                        switch event {
                        case .linked:
                            #expect(
                                actions == [.closeConnection] && machine.state == from && machine.epoch == Self.current,
                                "\(label)")
                        case .paused(let final):
                            #expect(actions == [.closeConnection, .recordPause] && machine.state == final, "\(label)")
                        case .severing:
                            #expect(actions == [] && machine.state == .severed, "\(label)")
                        case .resyncCompleted(true) where from == .synchronizing:
                            #expect(actions == [.clearLastError] && machine.state == .mirrored, "\(label)")
                        case .stop:
                            #expect(
                                actions == [.cancelJob, .closeConnection] && machine.lifecycle == lifecycle, "\(label)")
                        case .remove:
                            #expect(
                                actions == [.cancelJob, .closeConnection] && machine.lifecycle == .removed, "\(label)")
                        default:
                            #expect(actions == [] && machine.state == from, "\(label)")
                        }
                        if case .jobEnded = event { #expect(machine.job == nil, "\(label)") }
                        if case .jobFailed = event { #expect(machine.job == nil, "\(label)") }
                        #expect(
                            machine.isLinked
                                == (machine.lifecycle != .removed
                                    && (machine.state == .mirrored || machine.state == .synchronizing)))
                    }
                }
            }
        }
    }
}

/// Random event sequences against the guards the primary used before the machine: an epoch counter and
/// `stopping` / `removed` flags beside the record's state, checked where each change happened.
@Suite("mirror link machine against the flag model")
struct MirrorLinkMachineModelTests {
    struct FlagModel {
        var state: PrimaryMirrorRecord.State = .synchronizing
        var linkEpoch: UInt64 = 0
        var stopping = false
        var removed = false
        var resync = false
        var verify = false
        var linked: Bool { !removed && (state == .mirrored || state == .synchronizing) }

        /// Whether a fracture happened (the old `fracture(_:epoch:)`).
        mutating func fracture(_ epoch: UInt64?) -> Bool {
            if let epoch, epoch != linkEpoch { return false }
            if stopping { return false }
            guard linked else { return false }
            state = .fractured
            return true
        }

        /// Applies the event; returns whether a fracture, pause or job start followed.
        mutating func apply(_ event: MirrorLinkMachine.Event) -> (fractured: Bool, paused: Bool, started: Bool) {
            switch event {
            case .linked:
                guard !stopping else { return (false, false, false) }
                linkEpoch += 1
                state = .synchronizing
            case .linkFailed(let epoch): return (fracture(epoch), false, false)
            case .paused(let final):
                state = final
                return (false, true, false)
            case .severing: state = .severed
            case .resyncNeeded:
                guard !stopping, !resync, !verify, linked else { break }
                state = .synchronizing
                resync = true
                return (false, false, true)
            case .verifyRequested:
                guard !stopping, !resync, !verify, state == .mirrored, linked else { break }
                verify = true
                return (false, false, true)
            case .resyncCompleted(let inSync):
                if state == .synchronizing && inSync { state = .mirrored }
            case .jobEnded:
                resync = false
                verify = false
                if !stopping && state == .synchronizing {
                    resync = true
                    return (false, false, true)
                }
            case .jobFailed(let epoch, let cancelled):
                let wasResync = resync
                resync = false
                verify = false
                guard !stopping else { break }
                if cancelled {
                    guard wasResync else { break }
                    state = .fractured
                    return (false, true, false)
                }
                return (fracture(epoch), false, false)
            case .stop: stopping = true
            case .remove:
                removed = true
                stopping = true
            }
            return (false, false, false)
        }
    }

    static func randomEvent(_ random: inout SeededGenerator, epoch: UInt64) -> MirrorLinkMachine.Event {
        // Mostly the current link's epoch, sometimes an older one's.
        let seen = random.next(4) == 0 && epoch > 0 ? epoch - 1 : epoch
        switch random.next(14) {
        case 0: return .linked
        case 1, 2: return .linkFailed(epoch: random.next(5) == 0 ? nil : seen)
        case 3: return .paused(as: random.next(2) == 0 ? .fractured : .severed)
        case 4: return .severing
        case 5, 6: return .resyncNeeded
        case 7: return .verifyRequested
        case 8, 9: return .resyncCompleted(inSync: random.next(2) == 0)
        case 10: return .jobEnded
        case 11: return .jobFailed(epoch: seen, cancelled: random.next(3) == 0)
        case 12: return random.next(8) == 0 ? .stop : .linked
        default: return random.next(16) == 0 ? .remove : .resyncNeeded
        }
    }

    @Test("random event sequences agree with the flag model", arguments: [TestSeed.make()])
    func randomSequences(seed: UInt64) {
        var random = SeededGenerator(seed: seed)
        for sequence in 0..<300 {
            var machine = MirrorLinkMachine(state: .synchronizing)
            var model = FlagModel()
            var trace: [MirrorLinkMachine.Event] = []
            for _ in 0..<60 {
                let event = Self.randomEvent(&random, epoch: machine.epoch)
                trace.append(event)
                let expected = model.apply(event)
                let actions = machine.handle(event)
                let agrees =
                    machine.state == model.state && machine.epoch == model.linkEpoch
                    && machine.isLinked == model.linked && (machine.job == .resync) == model.resync
                    && (machine.job == .verify) == model.verify
                    && actions.contains(.recordFracture) == expected.fractured
                    && actions.contains(.recordPause) == expected.paused
                    && (actions.contains(.startResync) || actions.contains(.startVerify)) == expected.started
                guard agrees else {
                    Issue.record("seed \(seed), sequence \(sequence): \(machine) vs \(model) after \(trace)")
                    return
                }
            }
        }
    }
}
