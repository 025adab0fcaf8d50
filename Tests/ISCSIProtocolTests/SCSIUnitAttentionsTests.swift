import CairnTestSupport
import ISCSIProtocol
import NIOCore
import Testing

/// The unit attention queues without I/O: the first command of a new nexus, the three command classes of
/// SAM-5 §5.14 against every condition, order, duplicates, overflow, capacity changes, forgetting nexuses,
/// and seeded event sequences against a reference model.
@Suite struct SCSIUnitAttentionsTests {
    typealias Attentions = SCSIUnitAttentions
    static let a = SCSINexus(initiatorName: "iqn.2026-12.test:a", isid: 1)
    static let b = SCSINexus(initiatorName: "iqn.2026-12.test:b", isid: 2)
    static let c = SCSINexus(initiatorName: "iqn.2026-12.test:c", isid: 3)
    static let size: UInt64 = 1 << 20
    static let powerOn = Attentions.Decision.checkCondition(SCSIUnitAttention.powerOnOrReset.sense)

    static func report(_ condition: SCSIUnitAttention) -> Attentions.Decision { .checkCondition(condition.sense) }

    /// A unit on which `nexuses` have logged in and consumed their POWER ON report.
    static func settled(_ nexuses: [SCSINexus]) -> Attentions {
        var state = Attentions()
        for nexus in nexuses {
            state.arrived(nexus, capacity: size)
            #expect(state.command(.other, from: nexus, capacity: size) == powerOn)
        }
        return state
    }

    @Test("The codes: 29h/00h, 29h/02h, 29h/03h, 2Ah/03h, 2Ah/04h, 2Ah/05h, 2Ah/09h, all UNIT ATTENTION")
    func codes() {
        let codes = SCSIUnitAttention.allCases.map { [$0.sense.key, $0.sense.code, $0.sense.qualifier] }
        #expect(
            codes == [
                [6, 0x29, 0], [6, 0x29, 2], [6, 0x29, 3], [6, 0x2A, 3], [6, 0x2A, 4], [6, 0x2A, 5], [6, 0x2A, 9],
            ])
        // Fixed format: current error, key in byte 2, ASC/ASCQ in bytes 12/13.
        let data = Array(SCSIUnitAttention.capacityDataChanged.sense.fixedFormat.readableBytesView)
        #expect(data.count == 18 && data[0] == 0x70 && data[2] == 6 && data[12] == 0x2A && data[13] == 9)
    }

    @Test("A nexus new since start: INQUIRY and REPORT LUNS run and keep POWER ON pending; the next other command reports it once")
    func firstCommandOfANewNexus() {
        var state = Attentions()
        state.arrived(Self.a, capacity: Self.size)
        #expect(state.pending(for: Self.a) == [.powerOnOrReset])
        #expect(state.command(.init(opcode: 0x12), from: Self.a, capacity: Self.size) == .proceed)
        #expect(state.command(.init(opcode: 0xA0), from: Self.a, capacity: Self.size) == .proceed)
        #expect(state.pending(for: Self.a) == [.powerOnOrReset])
        #expect(
            state.command(.init(opcode: 0x00), from: Self.a, capacity: Self.size)
                == Self.powerOn)
        #expect(state.command(.init(opcode: 0x00), from: Self.a, capacity: Self.size) == .proceed)
        // The same nexus logging in again is not new.
        state.arrived(Self.a, capacity: Self.size)
        #expect(state.pending(for: Self.a).isEmpty)
        // A nexus whose first event is a command (no login seen) is new too.
        #expect(
            state.command(.other, from: Self.b, capacity: Self.size)
                == Self.powerOn)
    }

    @Test("Every condition against every command class: reported and cleared, reported as data and cleared, or kept")
    func everyConditionAgainstEveryClass() {
        let classes: [(UInt8, Attentions.CommandClass)] = [
            (0x12, .reportsWithoutClearing), (0xA0, .reportsWithoutClearing), (0x03, .requestSense), (0x00, .other),
            (0x28, .other), (0x2A, .other), (0x5F, .other), (0x25, .other),
        ]
        for (opcode, kind) in classes {
            #expect(Attentions.CommandClass(opcode: opcode) == kind, "opcode \(opcode)")
            for condition in SCSIUnitAttention.allCases {
                var state = Self.settled([Self.a, Self.b])
                state.establish(condition, for: Self.a)
                #expect(state.pending(for: Self.b).isEmpty)
                let decision = state.command(kind, from: Self.a, capacity: Self.size)
                switch kind {
                case .reportsWithoutClearing:
                    #expect(decision == .proceed)
                    #expect(state.pending(for: Self.a) == [condition])
                case .requestSense:
                    #expect(decision == .senseData(condition.sense))
                    #expect(state.pending(for: Self.a).isEmpty)
                case .other:
                    #expect(decision == .checkCondition(condition.sense))
                    #expect(state.pending(for: Self.a).isEmpty)
                }
                // The other nexus was never affected.
                #expect(state.command(kind, from: Self.b, capacity: Self.size) == .proceed)
            }
        }
    }

    @Test("Oldest first; a condition already pending is not queued twice; conditions for unseen nexuses are not kept")
    func orderAndDuplicates() {
        var state = Self.settled([Self.a])
        state.establish(.registrationsPreempted, for: Self.a)
        state.establish(.logicalUnitReset, for: Self.a)
        state.establish(.registrationsPreempted, for: Self.a)
        #expect(state.pending(for: Self.a) == [.registrationsPreempted, .logicalUnitReset])
        #expect(state.command(.other, from: Self.a, capacity: Self.size) == Self.report(.registrationsPreempted))
        #expect(
            state.command(.requestSense, from: Self.a, capacity: Self.size)
                == .senseData(SCSIUnitAttention.logicalUnitReset.sense))
        #expect(state.command(.requestSense, from: Self.a, capacity: Self.size) == .proceed)

        state.establish(.reservationsReleased, for: Self.c)
        #expect(!state.knows(Self.c))
        state.arrived(Self.c, capacity: Self.size)
        #expect(state.pending(for: Self.c) == [.powerOnOrReset])
    }

    @Test("A full queue: the next new condition folds it into one POWER ON, RESET, OR BUS DEVICE RESET OCCURRED")
    func overflow() {
        var state = Self.settled([Self.a])
        let first = Array(SCSIUnitAttention.allCases.dropFirst().prefix(Attentions.maximumPending))
        for condition in first { state.establish(condition, for: Self.a) }
        #expect(state.pending(for: Self.a) == first)
        // A duplicate of a pending one does not overflow.
        state.establish(first[0], for: Self.a)
        #expect(state.pending(for: Self.a) == first)
        let next = SCSIUnitAttention.allCases.first { !first.contains($0) && $0 != .powerOnOrReset }!
        state.establish(next, for: Self.a)
        #expect(state.pending(for: Self.a) == [.powerOnOrReset])
        #expect(state.command(.other, from: Self.a, capacity: Self.size) == Self.powerOn)
        #expect(state.command(.other, from: Self.a, capacity: Self.size) == .proceed)
    }

    @Test("A capacity change reaches every known nexus, the one that noticed it included, once per change")
    func capacityChange() {
        var state = Self.settled([Self.a, Self.b])
        #expect(state.command(.other, from: Self.a, capacity: 2 * Self.size) == Self.report(.capacityDataChanged))
        #expect(state.pending(for: Self.b) == [.capacityDataChanged])
        #expect(state.command(.other, from: Self.a, capacity: 2 * Self.size) == .proceed)
        // A login is an event too: a third nexus arriving after another resize tells the first two.
        state.arrived(Self.c, capacity: 3 * Self.size)
        #expect(state.pending(for: Self.a) == [.capacityDataChanged])
        #expect(state.pending(for: Self.b) == [.capacityDataChanged])
        #expect(state.pending(for: Self.c) == [.powerOnOrReset])
        #expect(state.capacity == 3 * Self.size)
    }

    @Test("Past maximumNexuses the nexus inactive longest is forgotten and is new again when it returns")
    func forgetting() {
        var state = Attentions()
        let nexuses = (0..<Attentions.maximumNexuses).map {
            SCSINexus(initiatorName: "iqn.2026-12.test:n", isid: UInt64($0))
        }
        for nexus in nexuses { state.arrived(nexus, capacity: Self.size) }
        // The first one is active again, so the second is now the oldest.
        _ = state.command(.other, from: nexuses[0], capacity: Self.size)
        state.arrived(Self.a, capacity: Self.size)
        #expect(state.nexusCount == Attentions.maximumNexuses)
        #expect(state.knows(nexuses[0]) && !state.knows(nexuses[1]) && state.knows(Self.a))
        state.arrived(nexuses[1], capacity: Self.size)
        #expect(state.pending(for: nexuses[1]) == [.powerOnOrReset])
    }

    @Test("A nexus with a session is forgotten last; once its sessions departed it is forgettable again")
    func sessionsOutlastIdleNexuses() {
        var state = Attentions()
        state.arrived(Self.a, capacity: Self.size)
        let nexuses = (1..<Attentions.maximumNexuses).map {
            SCSINexus(initiatorName: "iqn.2026-12.test:n", isid: UInt64($0))
        }
        for nexus in nexuses {
            state.arrived(nexus, capacity: Self.size)
            state.departed(nexus)
        }
        // a is the oldest, but has its session: the oldest without one goes.
        state.arrived(Self.b, capacity: Self.size)
        #expect(state.knows(Self.a) && !state.knows(nexuses[0]) && state.knows(Self.b))
        state.departed(Self.a)
        state.departed(Self.a)  // one departure too many changes nothing
        state.arrived(Self.c, capacity: Self.size)
        #expect(!state.knows(Self.a) && state.knows(nexuses[1]) && state.knows(Self.c))
    }

    @Test("Seeded event sequences from four nexuses agree with a reference model of the queues")
    func seededAgainstAModel() {
        let seed = TestSeed.make()
        print("SCSIUnitAttentionsTests seed: \(seed) (CAIRN_SEED=\(seed) replays it)")
        var random = SeededGenerator(seed: seed)
        let nexuses = [Self.a, Self.b, Self.c, SCSINexus(initiatorName: "iqn.2026-12.test:d", isid: 4)]
        var state = Attentions()
        var model: [SCSINexus: [SCSIUnitAttention]] = [:]
        var capacity = Self.size
        var modelCapacity: UInt64?
        func modelEstablish(_ condition: SCSIUnitAttention, _ nexus: SCSINexus) {
            guard var queue = model[nexus], !queue.contains(condition) else { return }
            queue = queue.count >= Attentions.maximumPending ? [.powerOnOrReset] : queue + [condition]
            model[nexus] = queue
        }
        func modelObserve(_ nexus: SCSINexus) {
            if let known = modelCapacity, known != capacity {
                for other in model.keys { modelEstablish(.capacityDataChanged, other) }
            }
            modelCapacity = capacity
            if model[nexus] == nil { model[nexus] = [.powerOnOrReset] }
        }
        for step in 0..<5000 {
            // What a session's clearance relies on: while `queued` stands still, no empty queue fills.
            let queuedBefore = state.queued
            let emptyBefore = nexuses.filter { state.knows($0) && state.pending(for: $0).isEmpty }
            defer {
                if state.queued == queuedBefore {
                    for nexus in emptyBefore {
                        #expect(state.pending(for: nexus).isEmpty, "step \(step), seed \(seed): queued did not move")
                    }
                }
            }
            let nexus = nexuses.randomElement(using: &random)!
            if Int.random(in: 0..<40, using: &random) == 0 { capacity += 512 }
            switch Int.random(in: 0..<6, using: &random) {
            case 0:
                state.arrived(nexus, capacity: capacity)
                modelObserve(nexus)
            case 1:
                let condition = SCSIUnitAttention.allCases.randomElement(using: &random)!
                state.establish(condition, for: nexus)
                modelEstablish(condition, nexus)
            case 2:
                let condition = SCSIUnitAttention.allCases.randomElement(using: &random)!
                state.establishForAll(condition, except: nexus)
                for other in model.keys where other != nexus { modelEstablish(condition, other) }
            default:
                let kind: Attentions.CommandClass = [.other, .other, .requestSense, .reportsWithoutClearing]
                    .randomElement(using: &random)!
                let decision = state.command(kind, from: nexus, capacity: capacity)
                modelObserve(nexus)
                let head = model[nexus]!.first
                let expected: Attentions.Decision
                switch (kind, head) {
                case (.reportsWithoutClearing, _), (_, nil): expected = .proceed
                case (.requestSense, let head?): expected = .senseData(head.sense)
                case (.other, let head?): expected = .checkCondition(head.sense)
                }
                if expected != .proceed { model[nexus]!.removeFirst() }
                #expect(decision == expected, "step \(step), seed \(seed)")
            }
            for other in nexuses {
                #expect(state.pending(for: other) == (model[other] ?? []), "step \(step), seed \(seed)")
                #expect(state.pending(for: other).count <= Attentions.maximumPending, "seed \(seed)")
                #expect(Set(state.pending(for: other)).count == state.pending(for: other).count, "seed \(seed)")
            }
        }
    }
}
