import ISCSIProtocol
import NIOCore
import Synchronization
import Testing

@testable import ISCSIServer

/// Unit attentions through the connection handler: sessions on one unit sharing the server's tables, the
/// CHECK CONDITION on the wire, REQUEST SENSE's data, and the conditions a login, a reservation command,
/// a resize and a reset establish.
@Suite final class ISCSIUnitAttentionHandlerTests {
    let unit = MemoryUnit(size: 1 << 20, identifier: 0x88)
    let reservations = ISCSIReservationTable()
    var catalog: MemoryCatalog { MemoryCatalog(units: ["lun": unit]) }

    func session(_ name: String, isid: UInt64 = 1, consume: Bool = true) throws -> HandlerSession {
        try HandlerSession(
            catalog: catalog, reservations: reservations, name: name, isid: isid, consumeAttentions: consume)
    }

    static let inquiry: [UInt8] = [0x12, 0, 0, 0, 36, 0]
    static let reportLUNs: [UInt8] = [0xA0, 0, 0, 0, 0, 0, 0, 0, 0, 16, 0, 0]
    static let requestSense: [UInt8] = [0x03, 0, 0, 0, 18, 0]

    func taskManagement(_ session: HandlerSession, function: UInt8) throws {
        var pdu = ISCSIPDU(opcode: .taskManagementRequest)
        pdu.flags = 0x80 | function
        pdu.initiatorTaskTag = 7000 + session.cmdSN
        pdu.setUInt32(session.cmdSN, 24)
        session.cmdSN += 1
        let answer = try session.exchange(pdu)
        #expect(answer.opcode == .taskManagementResponse && answer.byte(2) == 0, "\(answer)")
    }

    @Test("A new nexus: INQUIRY and REPORT LUNS pass, the next command reports 29h/00h once; the same nexus logging in again hears nothing")
    func powerOnOncePerNexus() throws {
        let first = try session("iqn.2026-12.test:a", isid: 3, consume: false)
        #expect(try first.status(Self.inquiry, expected: 36) == SCSIStatus.good)
        #expect(try first.status(Self.reportLUNs, expected: 16) == SCSIStatus.good)
        #expect(try first.testUnitReady() == (SCSIStatus.checkCondition, 6, 0x29, 0x00))
        #expect(try first.testUnitReady() == (SCSIStatus.good, 0, 0, 0))
        try first.drop()
        let again = try session("iqn.2026-12.test:a", isid: 3)
        #expect(again.loginAttentions.isEmpty)
        // Another ISID of the same initiator is another nexus.
        let other = try session("iqn.2026-12.test:a", isid: 4)
        #expect(other.loginAttentions == [[0x29, 0x00]])
    }

    @Test("REQUEST SENSE returns the pending condition as GOOD data and clears it; then NO SENSE")
    func requestSenseReportsAndClears() throws {
        let session = try session("iqn.2026-12.test:a", consume: false)
        let answer = try session.response(Self.requestSense, expected: 18)
        #expect(answer.byte(3) == SCSIStatus.good)
        let data = Array(answer.data.readableBytesView)
        #expect(data.count == 18 && data[0] == 0x70 && data[2] == 6 && data[12] == 0x29 && data[13] == 0, "\(data)")
        let none = Array(try session.response(Self.requestSense, expected: 18).data.readableBytesView)
        #expect(none.count == 18 && none[2] == 0 && none[12] == 0)
        #expect(try session.testUnitReady() == (SCSIStatus.good, 0, 0, 0))
        // A refused REQUEST SENSE (DESC: descriptor format is not offered) clears nothing.
        try taskManagement(try self.session("iqn.2026-12.test:b"), function: 5)
        #expect(senseOf(try session.response([0x03, 1, 0, 0, 18, 0], expected: 18)).1 == SCSISense.keyIllegalRequest)
        #expect(try session.testUnitReady() == (SCSIStatus.checkCondition, 6, 0x29, 0x03))
    }

    @Test("PREEMPT: the preempted initiator's next command reports REGISTRATIONS PREEMPTED, then runs; CLEAR: RESERVATIONS PREEMPTED")
    func preemptAndClear() throws {
        let a = try session("iqn.2026-12.test:a")
        let b = try session("iqn.2026-12.test:b")
        #expect(try a.persistentReserveOut(6, serviceActionKey: 0xA) == SCSIStatus.good)
        #expect(try b.persistentReserveOut(6, serviceActionKey: 0xB) == SCSIStatus.good)
        #expect(try a.persistentReserveOut(1, type: 1, key: 0xA) == SCSIStatus.good)
        // b preempts a's reservation (same type): a loses its registration.
        #expect(try b.persistentReserveOut(4, type: 1, key: 0xB, serviceActionKey: 0xA) == SCSIStatus.good)
        #expect(senseOf(try a.response([0x28, 0, 0, 0, 0, 1, 0, 0, 1, 0], expected: 512)) == (2, 6, 0x2A, 0x05))
        #expect(try a.write() == SCSIStatus.reservationConflict)
        #expect(try b.write() == SCSIStatus.good)
        // a registers again, b clears everything: a hears RESERVATIONS PREEMPTED, b nothing.
        #expect(try a.persistentReserveOut(6, serviceActionKey: 0xA) == SCSIStatus.good)
        #expect(try b.persistentReserveOut(3, key: 0xB) == SCSIStatus.good)
        #expect(try b.testUnitReady() == (SCSIStatus.good, 0, 0, 0))
        #expect(try a.testUnitReady() == (SCSIStatus.checkCondition, 6, 0x2A, 0x03))
        #expect(try a.write() == SCSIStatus.good)
    }

    @Test("A registrants-only RELEASE tells the other registrant RESERVATIONS RELEASED")
    func releaseOfARegistrantsOnlyType() throws {
        let a = try session("iqn.2026-12.test:a")
        let b = try session("iqn.2026-12.test:b")
        #expect(try a.persistentReserveOut(6, serviceActionKey: 0xA) == SCSIStatus.good)
        #expect(try b.persistentReserveOut(6, serviceActionKey: 0xB) == SCSIStatus.good)
        #expect(try a.persistentReserveOut(1, type: 5, key: 0xA) == SCSIStatus.good)
        #expect(try a.persistentReserveOut(2, type: 5, key: 0xA) == SCSIStatus.good)
        #expect(try a.testUnitReady() == (SCSIStatus.good, 0, 0, 0))
        #expect(try b.testUnitReady() == (SCSIStatus.checkCondition, 6, 0x2A, 0x04))
        #expect(try b.testUnitReady() == (SCSIStatus.good, 0, 0, 0))
    }

    @Test("A resize: every session's next command reports CAPACITY DATA HAS CHANGED once, then READ CAPACITY has the new size")
    func capacityChange() throws {
        let a = try session("iqn.2026-12.test:a")
        let b = try session("iqn.2026-12.test:b")
        unit.storage.withLock { $0.append(contentsOf: [UInt8](repeating: 0, count: 1 << 20)) }
        // INQUIRY notices it but neither reports nor clears it.
        #expect(try b.status(Self.inquiry, expected: 36) == SCSIStatus.good)
        #expect(try a.testUnitReady() == (SCSIStatus.checkCondition, 6, 0x2A, 0x09))
        #expect(try a.testUnitReady() == (SCSIStatus.good, 0, 0, 0))
        let capacity = try b.response([0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], expected: 8)
        #expect(senseOf(capacity) == (2, 6, 0x2A, 0x09))
        let data = Array(try b.response([0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], expected: 8).data.readableBytesView)
        #expect(data == [0, 0, 0x0F, 0xFF, 0, 0, 2, 0])
    }

    @Test("LOGICAL UNIT RESET: the other session hears 29h/03h, the sender nothing; TARGET WARM RESET: 29h/02h")
    func resets() throws {
        let a = try session("iqn.2026-12.test:a")
        let b = try session("iqn.2026-12.test:b")
        try taskManagement(a, function: 5)
        #expect(try a.testUnitReady() == (SCSIStatus.good, 0, 0, 0))
        #expect(try b.testUnitReady() == (SCSIStatus.checkCondition, 6, 0x29, 0x03))
        try taskManagement(a, function: 6)
        try taskManagement(a, function: 5)
        // Oldest first.
        #expect(try b.testUnitReady() == (SCSIStatus.checkCondition, 6, 0x29, 0x02))
        #expect(try b.testUnitReady() == (SCSIStatus.checkCondition, 6, 0x29, 0x03))
        #expect(try b.testUnitReady() == (SCSIStatus.good, 0, 0, 0))
        let first = SCSINexus(initiatorName: "iqn.2026-12.test:a", isid: 1)
        #expect(reservations.unitAttentions.pending(for: first, unit: 0x88).isEmpty)
    }
}
