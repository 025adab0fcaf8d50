import ISCSIProtocol
import Logging
import NIOCore
import NIOEmbedded
import Testing

@testable import ISCSIServer

/// One initiator session with the connection handler over an embedded channel: logged in to `target`
/// (operational stage straight to full feature, immediate data on), commands with immediate data. Like
/// libiscsi's connect, it then sends TEST UNIT READY until one is GOOD (at most 10 times), so the unit
/// attentions pending at login are consumed; `loginAttentions` lists them as (ASC, ASCQ).
final class HandlerSession {
    let channel = EmbeddedChannel()
    var decoder = ISCSIPDUDecoder()
    var cmdSN: UInt32 = 1
    var loginAttentions: [[UInt8]] = []

    init(
        catalog: MemoryCatalog,
        reservations: ISCSIReservationTable = ISCSIReservationTable(),
        name: String = "iqn.2026-12.test:initiator",
        isid: UInt64 = 1,
        target: String = "lun",
        consumeAttentions: Bool = true
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
        guard consumeAttentions else { return }
        for _ in 0..<10 {
            let answer = try self.response([0x00, 0, 0, 0, 0, 0])
            let (status, key, asc, ascq) = senseOf(answer)
            if status == SCSIStatus.good { return }
            #expect(
                status == SCSIStatus.checkCondition && key == SCSISense.keyUnitAttention, "TEST UNIT READY: \(answer)")
            loginAttentions.append([asc, ascq])
        }
        Issue.record("TEST UNIT READY still not GOOD after 10 tries: \(loginAttentions)")
    }

    /// (status, sense key, ASC, ASCQ) of TEST UNIT READY.
    func testUnitReady() throws -> (UInt8, UInt8, UInt8, UInt8) { senseOf(try response([0x00, 0, 0, 0, 0, 0])) }

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

/// (status, sense key, ASC, ASCQ) of a SCSI Response.
func senseOf(_ pdu: ISCSIPDU) -> (UInt8, UInt8, UInt8, UInt8) {
    let data = Array(pdu.data.readableBytesView)
    guard data.count >= 16 else { return (pdu.byte(3), 0, 0, 0) }
    return (pdu.byte(3), data[4] & 0x0F, data[14], data[15])
}
