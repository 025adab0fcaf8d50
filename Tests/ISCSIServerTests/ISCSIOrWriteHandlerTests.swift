import ISCSIProtocol
import NIOCore
import Testing

@testable import ISCSIServer

/// ORWRITE(16) through the connection handler: the OR lands in the unit, and each refusal carries its sense
/// and changes nothing.
@Suite struct ISCSIOrWriteHandlerTests {
    let unit = MemoryUnit(size: 1 << 20, identifier: 0x55, fill: 0x0F)
    let snapshot = MemoryUnit(size: 1 << 20, identifier: 0x66, readOnly: true)

    func session(_ target: String) throws -> HandlerSession {
        try HandlerSession(
            catalog: MemoryCatalog(units: ["lun": unit, "snap": snapshot]),
            reservations: ISCSIReservationTable(),
            name: "iqn.2026-12.test:a",
            isid: 1,
            target: target
        )
    }

    static func orWrite(lba: UInt64, blocks: UInt32, fua: Bool = false) -> [UInt8] {
        [0x8B, fua ? 0x08 : 0] + withUnsafeBytes(of: lba.bigEndian) { Array($0) }
            + withUnsafeBytes(of: blocks.bigEndian) { Array($0) } + [0, 0]
    }

    @Test("ORWRITE ORs the data into two blocks and leaves the rest alone")
    func orWriteCombines() throws {
        let lun = try session("lun")
        let answer = try lun.response(
            Self.orWrite(lba: 2, blocks: 2, fua: true),
            data: [UInt8](repeating: 0xA0, count: 1024)
        )
        #expect(senseOf(answer).0 == SCSIStatus.good)
        let bytes = unit.bytes
        #expect(bytes[1024..<2048].allSatisfy { $0 == 0xAF })
        #expect(bytes[0..<1024].allSatisfy { $0 == 0x0F } && bytes[2048...].allSatisfy { $0 == 0x0F })
    }

    @Test("ORWRITE refusals: a short transfer, past the end, ORPROTECT, a read-only unit; nothing written")
    func refusals() throws {
        let lun = try session("lun")
        let block = [UInt8](repeating: 0xF0, count: 512)
        // Expected Data Transfer Length below the CDB's: INVALID FIELD IN CDB before any data is taken.
        var answer = try lun.response(Self.orWrite(lba: 0, blocks: 2), data: block)
        #expect(senseOf(answer) == (SCSIStatus.checkCondition, 0x05, 0x24, 0x00))
        answer = try lun.response(Self.orWrite(lba: 2048, blocks: 1), data: block)
        #expect(senseOf(answer) == (SCSIStatus.checkCondition, 0x05, 0x21, 0x00))
        var protected = Self.orWrite(lba: 0, blocks: 1)
        protected[1] = 0x20
        answer = try lun.response(protected, data: block)
        #expect(senseOf(answer) == (SCSIStatus.checkCondition, 0x05, 0x24, 0x00))
        #expect(unit.bytes.allSatisfy { $0 == 0x0F })
        let snap = try session("snap")
        answer = try snap.response(Self.orWrite(lba: 0, blocks: 1), data: block)
        #expect(senseOf(answer) == (SCSIStatus.checkCondition, 0x07, 0x27, 0x00))
        #expect(snapshot.bytes.allSatisfy { $0 == 0 })
    }
}
