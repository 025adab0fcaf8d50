import ISCSIProtocol
import Logging
import NIOCore
import NIOPosix
import Synchronization

/// Where a server keeps the reservations that must survive a restart (APTPL): the daemon's durable
/// small-file layer. `save` replaces everything saved with `units` and returns once that is durable.
public protocol ISCSIReservationStore: Sendable {
    func save(_ units: [UInt64: SCSIReservations.Persistent]) throws
}

/// The reservations of every logical unit a server serves, by unit identifier, shared by all its
/// sessions: a reservation taken in one session holds off the others (SPC-4 §5.13). Registrations outlive
/// sessions; with a store they also outlive the daemon for units whose last REGISTER set APTPL. NBD
/// clients of the same volume are not subject to them (NBD has no reservations).
public final class ISCSIReservationTable: Sendable {
    private let units: Mutex<[UInt64: SCSIReservations]>
    private let store: (any ISCSIReservationStore)?
    /// Serializes saves, each writing the table as it is when it starts: a command answered after its own
    /// save finished is covered by it, whatever order concurrent commands' saves ran in.
    private let saving = Mutex(())
    private let logger: Logger
    /// Where the unit attentions a reservation command owes other nexuses go (and the server's other unit
    /// attentions: one table per server, reached through this one by every session).
    public let unitAttentions: ISCSIUnitAttentionTable

    /// `restored`: what `store` held at start (the units whose APTPL was on).
    public init(
        store: (any ISCSIReservationStore)? = nil, restored: [UInt64: SCSIReservations.Persistent] = [:],
        unitAttentions: ISCSIUnitAttentionTable = ISCSIUnitAttentionTable(),
        logger: Logger = Logger(label: "cairn.iscsi")
    ) {
        self.unitAttentions = unitAttentions
        self.store = store
        self.logger = logger
        units = Mutex(restored.mapValues { SCSIReservations(restoring: $0) })
    }

    private var offersPersistence: Bool { store != nil }

    /// Runs `body` on the unit's reservations under the table's lock.
    func withUnit<T: Sendable>(_ identifier: UInt64, _ body: (inout SCSIReservations) -> T) -> T {
        units.withLock { units in
            var state = units[identifier] ?? SCSIReservations(persistenceOffered: offersPersistence)
            let result = body(&state)
            // A unit with nothing reserved, registered or kept takes no entry.
            units[identifier] = state.isInitial ? nil : state
            return result
        }
    }

    /// Runs a reservation command and establishes the unit attentions it owes other nexuses (before the
    /// answer, so no other session's later command misses them); when it changed what a restart must keep
    /// (or stopped keeping it), the answer waits for the durable save. A save that fails answers INTERNAL TARGET FAILURE; the command's
    /// effect stays in memory and the next save that succeeds writes it.
    func execute(
        _ command: SCSICommand, parameters: ByteBuffer?, from nexus: SCSINexus, unit: UInt64, eventLoop: any EventLoop
    ) -> EventLoopFuture<SCSIReservations.Outcome> {
        let (outcome, notices, changedKept) = withUnit(unit) { state in
            let before = state.persistent
            let (outcome, notices) = state.run(command, parameters: parameters, from: nexus)
            return (outcome, notices, state.persistent != before)
        }
        unitAttentions.establish(notices, unit: unit)
        guard changedKept, store != nil else { return eventLoop.makeSucceededFuture(outcome) }
        return NIOThreadPool.singleton.runIfActive(eventLoop: eventLoop) { try self.saveKept() }
            .map { outcome }
            .flatMapErrorThrowing { [logger] error in
                logger.error(
                    "cannot save the iSCSI reservations that must survive a restart: the command is answered INTERNAL TARGET FAILURE",
                    metadata: ["unit": "\(unit)", "error": "\(error)"])
                return .sense(.internalTargetFailure)
            }
    }

    /// Writes every unit's kept state (blocking: a thread pool's thread).
    private func saveKept() throws {
        guard let store else { return }
        try saving.withLock { _ in
            let kept = units.withLock { units in units.compactMapValues(\.persistent) }
            try store.save(kept)
        }
    }

    /// Whether `command` from `nexus` may run on the unit now.
    func permits(_ command: SCSICommand, from nexus: SCSINexus, unit: UInt64) -> Bool {
        units.withLock { $0[unit]?.permits(command, from: nexus) ?? true }
    }
}
