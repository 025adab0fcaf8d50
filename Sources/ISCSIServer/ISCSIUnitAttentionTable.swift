import ISCSIProtocol
import Synchronization

/// The pending unit attention conditions of every logical unit a server serves, by unit identifier, shared
/// by all its sessions (a condition one session causes is reported to the others). Each unit's state is a
/// pure `SCSIUnitAttentions`; this only adds the lock.
public final class ISCSIUnitAttentionTable: Sendable {
    private let units = Mutex<[UInt64: SCSIUnitAttentions]>([:])

    public init() {}

    /// Runs `body` on the unit's conditions under the table's lock.
    func withUnit<T: Sendable>(_ identifier: UInt64, _ body: (inout SCSIUnitAttentions) -> T) -> T {
        units.withLock { units in body(&units[identifier, default: SCSIUnitAttentions()]) }
    }

    /// A session of `nexus` logged in to the unit.
    func arrived(_ nexus: SCSINexus, unit: UInt64, capacity: UInt64) {
        withUnit(unit) { $0.arrived(nexus, capacity: capacity) }
    }

    /// A command whose CDB starts with `opcode` arrived from `nexus`: what the unit attention rules say.
    func command(opcode: UInt8, from nexus: SCSINexus, unit: UInt64, capacity: UInt64) -> SCSIUnitAttentions.Decision {
        withUnit(unit) { $0.command(.init(opcode: opcode), from: nexus, capacity: capacity) }
    }

    /// Establishes what a reservation command owes other nexuses.
    func establish(_ notices: [SCSIReservations.Notice], unit: UInt64) {
        guard !notices.isEmpty else { return }
        withUnit(unit) { state in
            for notice in notices { state.establish(notice.condition, for: notice.nexus) }
        }
    }

    /// Establishes `condition` for every nexus of the unit but `excluded` (a reset).
    func establishForAll(_ condition: SCSIUnitAttention, unit: UInt64, except excluded: SCSINexus?) {
        withUnit(unit) { $0.establishForAll(condition, except: excluded) }
    }

    /// The conditions pending for `nexus` on the unit, oldest first (tests, diagnostics).
    public func pending(for nexus: SCSINexus, unit: UInt64) -> [SCSIUnitAttention] {
        units.withLock { $0[unit]?.pending(for: nexus) ?? [] }
    }
}
