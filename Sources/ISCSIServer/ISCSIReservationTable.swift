import ISCSIProtocol
import Synchronization

/// The reservations of every logical unit a server serves, by unit identifier, shared by all its
/// sessions: a reservation taken in one session holds off the others (SPC-4 §5.13). In memory only, so
/// registrations outlive sessions but not the daemon. NBD clients of the same volume are not subject to
/// them (NBD has no reservations).
public final class ISCSIReservationTable: Sendable {
    private let units = Mutex<[UInt64: SCSIReservations]>([:])

    public init() {}

    /// Runs `body` on the unit's reservations under the table's lock.
    func withUnit<T: Sendable>(_ identifier: UInt64, _ body: (inout SCSIReservations) -> T) -> T {
        units.withLock { units in
            var state = units[identifier] ?? SCSIReservations()
            let result = body(&state)
            // A unit with nothing reserved or registered takes no entry.
            units[identifier] = state == SCSIReservations() ? nil : state
            return result
        }
    }

    /// Whether `command` from `nexus` may run on the unit now.
    func permits(_ command: SCSICommand, from nexus: SCSINexus, unit: UInt64) -> Bool {
        units.withLock { $0[unit]?.permits(command, from: nexus) ?? true }
    }
}
