import ISCSIProtocol
import Logging
import NIOCore
import NIOEmbedded
import Testing

@testable import ISCSIServer

/// Reservations through the connection handler: two sessions on one unit sharing the server's table,
/// the RESERVATION CONFLICT status on the wire, and what the end of a session releases.
@Suite final class ISCSIReservationHandlerTests {
    /// One initiator session over an embedded channel.
    final class Session {
        let channel = EmbeddedChannel()
        var decoder = ISCSIPDUDecoder()
        var cmdSN: UInt32 = 1

        init(
            catalog: MemoryCatalog,
            reservations: ISCSIReservationTable,
            name: String,
            isid: UInt64,
            target: String = "lun"
        ) throws {
            let handler = ISCSIConnectionHandler(
                initiator: ISCSIInitiatorInfo(id: 1, remoteAddress: "127.0.0.1:1", remoteIP: "127.0.0.1"),
                portal: "127.0.0.1:3260",
                catalog: catalog,
                configuration: ISCSIServerConfiguration(),
                tsih: 1,
                logger: .init(label: "test"),
                reservations: reservations
            )
            try channel.pipeline.syncOperations.addHandler(handler)
            channel.pipeline.fireChannelActive()
            decoder.maximumDataSegmentLength = ISCSILimits.maximumDataSegmentLength
            var pdu = ISCSIPDU(
                opcode: .loginRequest,
                data: ISCSITextParameters.encode([
                    ("InitiatorName", name), ("TargetName", target), ("SessionType", "Normal"),
                    ("ImmediateData", "Yes"), ("InitialR2T", "No"), ("MaxRecvDataSegmentLength", "262144"),
                ])
            )
            pdu.isImmediate = true
            pdu.flags = 0x87
            pdu.setUInt64(isid << 16, 8)
            pdu.initiatorTaskTag = 1
            pdu.setUInt32(cmdSN, 24)
            let response = try exchange(pdu)
            #expect(response.opcode == .loginResponse && response.uint16(36) == 0, "login: \(response)")
        }

        func exchange(_ pdu: ISCSIPDU) throws -> ISCSIPDU {
            try channel.writeInbound(pdu.encoded())
            channel.embeddedEventLoop.run()
            var out = ByteBuffer()
            while var part = try channel.readOutbound(as: ByteBuffer.self) { out.writeBuffer(&part) }
            var last: ISCSIPDU?
            while let next = try decoder.decode(&out) { last = next }
            return try #require(last, "no answer")
        }

        /// The SCSI status of `cdb` with `data` as immediate data.
        func status(_ cdb: [UInt8], data: [UInt8] = [], expected: UInt32? = nil) throws -> UInt8 {
            try response(cdb, data: data, expected: expected).byte(3)
        }

        /// The last PDU answering `cdb` with `data` as immediate data.
        func response(_ cdb: [UInt8], data: [UInt8] = [], expected: UInt32? = nil) throws -> ISCSIPDU {
            var pdu = ISCSIPDU(opcode: .scsiCommand, data: ByteBuffer(bytes: data))
            pdu.flags = 0x80 | (data.isEmpty ? 0x40 : 0x20) | 0x01
            pdu.initiatorTaskTag = cmdSN + 100
            pdu.setUInt32(expected ?? UInt32(data.count), 20)
            pdu.setUInt32(cmdSN, 24)
            for (index, byte) in (cdb + [UInt8](repeating: 0, count: 16 - cdb.count)).enumerated() {
                pdu.setByte(byte, 32 + index)
            }
            cmdSN += 1
            return try exchange(pdu)
        }

        func write() throws -> UInt8 {
            try status([0x2A, 0, 0, 0, 0, 1, 0, 0, 1, 0], data: [UInt8](repeating: 0x5A, count: 512))
        }
        func read() throws -> UInt8 { try status([0x28, 0, 0, 0, 0, 1, 0, 0, 1, 0], expected: 512) }

        /// PERSISTENT RESERVE OUT with the basic parameter list.
        func persistentReserveOut(_ action: UInt8, type: UInt8 = 0, key: UInt64 = 0, serviceActionKey: UInt64 = 0)
            throws
            -> UInt8
        {
            let list =
                withUnsafeBytes(of: key.bigEndian) { Array($0) }
                + withUnsafeBytes(of: serviceActionKey.bigEndian) { Array($0) }
                + [UInt8](repeating: 0, count: 8)
            return try status([0x5F, action, type, 0, 0, 0, 0, 0, 24, 0], data: list)
        }

        /// The channel closes without a logout: the connection is lost.
        func drop() throws {
            channel.pipeline.fireChannelInactive()
            channel.embeddedEventLoop.run()
        }
    }

    let unit = MemoryUnit(size: 1 << 20, identifier: 0x44)
    let reservations = ISCSIReservationTable()
    var catalog: MemoryCatalog { MemoryCatalog(units: ["lun": unit]) }

    func session(_ name: String, isid: UInt64 = 1) throws -> Session {
        try Session(catalog: catalog, reservations: reservations, name: name, isid: isid)
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
