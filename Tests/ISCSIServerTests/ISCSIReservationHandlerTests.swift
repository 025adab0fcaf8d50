import ISCSIProtocol
import Logging
import NIOCore
import NIOEmbedded
import Testing

@testable import ISCSIServer

/// Reservations through the connection handler: two sessions on one unit sharing the server's table,
/// the RESERVATION CONFLICT status on the wire, and what the end of a session releases.
@Suite final class ISCSIReservationHandlerTests {
    let unit = MemoryUnit(size: 1 << 20, identifier: 0x44)
    let reservations = ISCSIReservationTable()
    var catalog: MemoryCatalog { MemoryCatalog(units: ["lun": unit]) }

    func session(_ name: String, isid: UInt64 = 1) throws -> HandlerSession {
        try HandlerSession(catalog: catalog, reservations: reservations, name: name, isid: isid)
    }

    @Test(
        "RESERVE(6) in one session: the other's WRITE gets RESERVATION CONFLICT and writes nothing until the holder's connection is lost"
    )
    func reserveEndsWithTheHoldersConnection() throws {
        let holder = try session("iqn.2026-12.test:a")
        let other = try session("iqn.2026-12.test:b")
        #expect(try holder.status([0x16, 0, 0, 0, 0, 0]) == SCSIStatus.good)
        #expect(try other.write() == SCSIStatus.reservationConflict)
        #expect(unit.bytes[512] == 0)
        #expect(try other.status([0x12, 0, 0, 0, 36, 0], expected: 36) == SCSIStatus.good)  // INQUIRY passes.
        #expect(try holder.write() == SCSIStatus.good)
        try holder.drop()
        #expect(try other.write() == SCSIStatus.good)
        #expect(try other.status([0x16, 0, 0, 0, 0, 0]) == SCSIStatus.good)
    }

    @Test(
        "LOGICAL UNIT RESET ends a RESERVE; a persistent registration survives the session, and the same initiator port gets its access back"
    )
    func persistentRegistrationOutlivesTheSession() throws {
        let holder = try session("iqn.2026-12.test:a", isid: 7)
        #expect(try holder.status([0x16, 0, 0, 0, 0, 0]) == SCSIStatus.good)
        var reset = ISCSIPDU(opcode: .taskManagementRequest)
        reset.flags = 0x80 | 5
        reset.initiatorTaskTag = 50
        reset.setUInt32(holder.cmdSN, 24)
        holder.cmdSN += 1
        #expect(try holder.exchange(reset).opcode == .taskManagementResponse)
        let other = try session("iqn.2026-12.test:b")
        #expect(try other.write() == SCSIStatus.good)

        // REGISTER AND IGNORE EXISTING KEY, RESERVE Exclusive Access.
        #expect(try holder.persistentReserveOut(6, serviceActionKey: 0xAB) == SCSIStatus.good)
        #expect(try holder.persistentReserveOut(1, type: 3, key: 0xAB) == SCSIStatus.good)
        #expect(try other.read() == SCSIStatus.reservationConflict)
        try holder.drop()
        // Persistent: the holder's session is gone, the reservation is not.
        #expect(try other.write() == SCSIStatus.reservationConflict)
        // The same initiator port logs in again and still holds it: it may RELEASE.
        let again = try session("iqn.2026-12.test:a", isid: 7)
        #expect(try again.write() == SCSIStatus.good)
        #expect(try again.persistentReserveOut(2, type: 3, key: 0xAB) == SCSIStatus.good)
        #expect(try other.write() == SCSIStatus.good)
        // A parameter list of the wrong length: PARAMETER LIST LENGTH ERROR before any data is taken.
        #expect(
            try again.status([0x5F, 6, 0, 0, 0, 0, 0, 0, 16, 0], data: [UInt8](repeating: 0, count: 16))
                == SCSIStatus.checkCondition
        )
    }
}
