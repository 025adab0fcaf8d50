import ISCSIProtocol
import Testing

@testable import ISCSIServer

/// The table's lock-free path: a session's clearance lets its commands skip the lock only while nothing
/// was queued anywhere and the capacity it saw holds.
@Suite struct ISCSIUnitAttentionTableTests {
    static let a = SCSINexus(initiatorName: "iqn.2026-12.test:a", isid: 1)
    static let b = SCSINexus(initiatorName: "iqn.2026-12.test:b", isid: 2)
    static let unit: UInt64 = 0x42
    static let size: UInt64 = 1 << 20
    static let testUnitReady: UInt8 = 0x00

    static func report(_ condition: SCSIUnitAttention) -> SCSIUnitAttentions.Decision { .checkCondition(condition.sense) }

    @Test("A clearance is given only with nothing pending, and every condition queued or capacity change ends it")
    func clearanceFollowsTheQueues() {
        let table = ISCSIUnitAttentionTable()
        var clearance: ISCSIUnitAttentionTable.Clearance?
        func command(_ size: UInt64 = Self.size) -> SCSIUnitAttentions.Decision {
            table.command(opcode: Self.testUnitReady, from: Self.a, unit: Self.unit, capacity: size, clearance: &clearance)
        }
        table.arrived(Self.a, unit: Self.unit, capacity: Self.size)
        table.arrived(Self.b, unit: Self.unit, capacity: Self.size)
        #expect(command() == Self.report(.powerOnOrReset))
        #expect(clearance != nil)
        #expect(command() == .proceed)
        // Queued for a: the clearance is stale and the condition is reported.
        table.establishForAll(.logicalUnitReset, unit: Self.unit, except: Self.b)
        #expect(command() == Self.report(.logicalUnitReset))
        #expect(command() == .proceed)
        // Queued for b only: a goes through the lock once, finds nothing, and is cleared again.
        let stale = clearance
        table.establishForAll(.targetReset, unit: Self.unit, except: Self.a)
        #expect(command() == .proceed)
        #expect(clearance != nil && clearance != stale)
        // The capacity a command carries differs from the one cleared: reported, to a as well.
        #expect(command(Self.size * 2) == Self.report(.capacityDataChanged))
        #expect(table.pending(for: Self.b, unit: Self.unit) == [.powerOnOrReset, .targetReset, .capacityDataChanged])
        // Two conditions pending: the first report leaves no clearance, so the second is not skipped.
        table.establish([.init(.reservationsReleased, for: Self.a), .init(.registrationsPreempted, for: Self.a)], unit: Self.unit)
        #expect(command(Self.size * 2) == Self.report(.reservationsReleased))
        #expect(clearance == nil)
        #expect(command(Self.size * 2) == Self.report(.registrationsPreempted))
        #expect(command(Self.size * 2) == .proceed)
    }
}
