import ISCSIProtocol
import Synchronization

/// The pending unit attention conditions of every logical unit a server serves, by unit identifier, shared
/// by all its sessions (a condition one session causes is reported to the others). Each unit's state is a
/// pure `SCSIUnitAttentions`; this adds the lock, and a way for the common command to skip it.
///
/// Every SCSI command asks whether its nexus has a condition pending, and almost always none is. A session
/// keeps a `Clearance`: the table's generation and the unit's capacity when its nexus last had nothing
/// pending. Everything that can queue a condition bumps the generation under the lock, so while both still
/// match nothing can be pending and the command proceeds on one atomic load. A nexus on that path is not
/// marked active, but one with a session is the last to be forgotten; should it be all the same, the
/// arrival that pushed it out bumped the generation, so its next command goes through the lock, where it
/// is new again and hears 29h/00h (which covers whatever was meant for it meanwhile).
public final class ISCSIUnitAttentionTable: Sendable {
    private let units = Mutex<[UInt64: SCSIUnitAttentions]>([:])
    /// Bumped under the lock whenever a unit queued a condition for some nexus.
    private let generation = Atomic<UInt64>(0)

    /// Proof that a session's nexus had nothing pending at `generation` with the unit at `capacity` bytes.
    struct Clearance: Sendable, Equatable {
        var generation: UInt64
        var capacity: UInt64
    }

    public init() {}

    /// Runs `body` on the unit's conditions under the table's lock, bumping the generation if it queued any.
    private func withUnit<T>(
        _ identifier: UInt64, in units: inout [UInt64: SCSIUnitAttentions], _ body: (inout SCSIUnitAttentions) -> T
    ) -> T {
        let queuedBefore = units[identifier]?.queued ?? 0
        let result = body(&units[identifier, default: SCSIUnitAttentions()])
        if units[identifier]!.queued != queuedBefore { generation.wrappingAdd(1, ordering: .releasing) }
        return result
    }

    private func withUnit<T: Sendable>(_ identifier: UInt64, _ body: (inout SCSIUnitAttentions) -> T) -> T {
        units.withLock { units in withUnit(identifier, in: &units, body) }
    }

    /// A session of `nexus` logged in to the unit.
    func arrived(_ nexus: SCSINexus, unit: UInt64, capacity: UInt64) {
        withUnit(unit) { $0.arrived(nexus, capacity: capacity) }
    }

    /// A session of `nexus` that arrived ended.
    func departed(_ nexus: SCSINexus, unit: UInt64) {
        units.withLock { $0[unit]?.departed(nexus) }
    }

    /// A command whose CDB starts with `opcode` arrived from `nexus`: what the unit attention rules say.
    /// `clearance` is the session's: used to skip the lock, and renewed or dropped here.
    func command(
        opcode: UInt8, from nexus: SCSINexus, unit: UInt64, capacity: UInt64, clearance: inout Clearance?
    ) -> SCSIUnitAttentions.Decision {
        let kind = SCSIUnitAttentions.CommandClass(opcode: opcode)
        if let known = clearance, known.capacity == capacity, known.generation == generation.load(ordering: .acquiring) {
            return .proceed
        }
        return units.withLock { units in
            let decision = withUnit(unit, in: &units) { $0.command(kind, from: nexus, capacity: capacity) }
            // Read under the lock: a bump after it is one this session has not seen.
            clearance =
                units[unit]!.pending(for: nexus).isEmpty
                ? Clearance(generation: generation.load(ordering: .relaxed), capacity: capacity) : nil
            return decision
        }
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
