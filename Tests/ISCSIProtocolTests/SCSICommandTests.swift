import ISCSIProtocol
import NIOCore
import Testing

@Suite struct SCSICommandTests {
    static func cdb(_ bytes: [UInt8]) -> [UInt8] { bytes + [UInt8](repeating: 0, count: 16 - bytes.count) }

    @Test func readsAndWritesOfEverySizeDecode() throws {
        #expect(try SCSICommand.parse(Self.cdb([0x08, 0x01, 0x02, 0x03, 0x00, 0])) == .read(lba: 0x10203, blocks: 256, fua: false))
        #expect(try SCSICommand.parse(Self.cdb([0x28, 0, 0, 0, 0, 0x10, 0, 0, 8, 0])) == .read(lba: 16, blocks: 8, fua: false))
        #expect(try SCSICommand.parse(Self.cdb([0xAA, 0x08, 0, 0, 0, 1, 0, 0, 0, 2])) == .write(lba: 1, blocks: 2, fua: true))
        let write16 = Self.cdb([0x8A, 0x08, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 4])
        #expect(try SCSICommand.parse(write16) == .write(lba: 1 << 32, blocks: 4, fua: true))
    }

    @Test func protectionFieldsAndUnknownOpcodesAreRefused() {
        #expect(throws: SCSISense.invalidFieldInCDB) { try SCSICommand.parse(Self.cdb([0x28, 0x20])) }
        #expect(throws: SCSISense.invalidOperationCode) { try SCSICommand.parse(Self.cdb([0xC0])) }
        #expect(throws: SCSISense.invalidFieldInCDB) { try SCSICommand.parse(Self.cdb([0x12, 0x00, 0x80])) }
        #expect(throws: SCSISense.invalidFieldInCDB) { try SCSICommand.parse(Self.cdb([0xA0, 0, 0, 0, 0, 0, 0, 0, 0, 8])) }
        #expect(throws: SCSISense.invalidFieldInCDB) { try SCSICommand.parse(Self.cdb([0x41, 0x10])) }
    }

    @Test func serviceActionsDecode() throws {
        #expect(try SCSICommand.parse(Self.cdb([0x9E, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32])) == .readCapacity16(allocation: 32))
        #expect(try SCSICommand.parse(Self.cdb([0x9E, 0x12, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 24])) == .getLBAStatus(lba: 5, allocation: 24))
        let unmap = Self.cdb([0x93, 0x08, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 8])
        #expect(try SCSICommand.parse(unmap) == .writeSame(lba: 0, blocks: 8, unmap: true, noDataOut: false))
    }

    static let profile = SCSIDeviceProfile(blockCount: 2048, readOnly: true, serial: "cairn-1", naaIdentifier: 42)

    @Test func readCapacity16SaysThinAndZeroed() {
        var data = Self.profile.readCapacity16
        #expect(data.readableBytes == 32)
        #expect(data.readInteger(as: UInt64.self) == 2047)
        #expect(data.readInteger(as: UInt32.self) == 512)
        #expect(data.readInteger(as: UInt8.self) == 0)
        #expect(data.readInteger(as: UInt8.self) == 0)  // One logical block per physical block (see SCSIDeviceProfile).
        #expect(data.readInteger(as: UInt16.self) == 0xC000)
    }

    @Test func inquiryPagesAreListedAndWellFormed() throws {
        var pages = try Self.profile.inquiry(vitalProductData: true, page: 0)
        #expect(Array(pages.readBytes(length: pages.readableBytes)!) == [0, 0, 0, 7, 0x00, 0x80, 0x83, 0x8F, 0xB0, 0xB1, 0xB2])
        for page in SCSIDeviceProfile.vitalProductDataPages {
            let data = try Self.profile.inquiry(vitalProductData: true, page: page)
            #expect(data.getInteger(at: 1, as: UInt8.self) == page)
            #expect(Int(data.getInteger(at: 2, as: UInt16.self)!) == data.readableBytes - 4)
        }
        let identification = try Self.profile.inquiry(vitalProductData: true, page: 0x83)
        #expect(identification.getInteger(at: 5, as: UInt8.self) == 0x03)  // NAA designator.
        #expect(identification.getInteger(at: 8, as: UInt8.self)! >> 4 == 3)  // NAA type 3.
        #expect(throws: SCSISense.invalidFieldInCDB) { try Self.profile.inquiry(vitalProductData: true, page: 0x81) }
        let standard = try Self.profile.inquiry(vitalProductData: false, page: 0)
        #expect(standard.getString(at: 8, length: 8) == "CAIRN   ")
    }

    @Test func modeSenseMarksAReadOnlyUnitWriteProtected() throws {
        let six = try Self.profile.modeSense(sixByte: true, disableBlockDescriptors: false, pageControl: 0, page: 0x3F, subpage: 0)
        #expect(Int(six.getInteger(at: 0, as: UInt8.self)!) == six.readableBytes - 1)
        #expect(six.getInteger(at: 2, as: UInt8.self)! & 0x80 != 0)
        let ten = try Self.profile.modeSense(sixByte: false, disableBlockDescriptors: true, pageControl: 0, page: 0x08, subpage: 0)
        #expect(Int(ten.getInteger(at: 0, as: UInt16.self)!) == ten.readableBytes - 2)
        #expect(ten.getInteger(at: 8, as: UInt8.self) == 0x08)
        #expect(throws: SCSISense.savingParametersNotSupported) {
            try Self.profile.modeSense(sixByte: true, disableBlockDescriptors: false, pageControl: 3, page: 0x08, subpage: 0)
        }
    }

    @Test func reportSupportedOperationCodesDescribesOneCommand() throws {
        let one = try SCSISupportedCommands.report(options: 1, timeouts: false, opcode: 0x28, serviceAction: 0)
        #expect(one.getInteger(at: 1, as: UInt8.self)! & 0x07 == 3)
        #expect(one.getInteger(at: 2, as: UInt16.self) == 10)
        #expect(one.getInteger(at: 4, as: UInt8.self) == 0x28)
        let unsupported = try SCSISupportedCommands.report(options: 1, timeouts: false, opcode: 0xC0, serviceAction: 0)
        #expect(unsupported.getInteger(at: 1, as: UInt8.self)! & 0x07 == 1)
        // The wrong reporting option is pointed at (byte 2, bits 2..0), so it does not read as "unsupported".
        #expect(throws: SCSISense.invalidFieldInCDB(byte: 2, bit: 2)) {
            try SCSISupportedCommands.report(options: 1, timeouts: false, opcode: 0x9E, serviceAction: 0x10)
        }
        #expect(throws: SCSISense.invalidFieldInCDB(byte: 2, bit: 2)) {
            try SCSISupportedCommands.report(options: 2, timeouts: false, opcode: 0x00, serviceAction: 0)
        }
    }

    @Test func senseDataIsFixedFormat() {
        let sense = SCSISense.lbaOutOfRange.fixedFormat
        #expect(sense.readableBytes == 18)
        #expect(sense.getInteger(at: 0, as: UInt8.self) == 0x70)
        #expect(sense.getInteger(at: 2, as: UInt8.self) == 0x05)
        #expect(sense.getInteger(at: 12, as: UInt8.self) == 0x21)
        #expect(sense.getInteger(at: 15, as: UInt8.self) == 0)
        // Sense-key specific: SKSV, C/D (in the CDB), BPV with bit 2, field pointer 2.
        let pointed = SCSISense.invalidFieldInCDB(byte: 2, bit: 2).fixedFormat
        #expect(pointed.readableBytes == 18)
        #expect(pointed.getInteger(at: 12, as: UInt8.self) == 0x24)
        #expect(pointed.getInteger(at: 15, as: UInt8.self) == 0xCA)
        #expect(pointed.getInteger(at: 16, as: UInt16.self) == 2)
        #expect(SCSISense.invalidFieldInCDB(byte: 1).fixedFormat.getInteger(at: 15, as: UInt8.self) == 0xC0)
    }

    @Test("ORWRITE(16) decodes with FUA; ORPROTECT is refused; REPORT SUPPORTED OPERATION CODES lists it")
    func orWriteDecodes() throws {
        let cdb = Self.cdb([0x8B, 0x18, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 3])
        #expect(try SCSICommand.parse(cdb) == .orWrite(lba: 7, blocks: 3, fua: true))
        for protect: UInt8 in 1..<8 {
            #expect(throws: SCSISense.invalidFieldInCDB) { try SCSICommand.parse(Self.cdb([0x8B, protect << 5])) }
        }
        let one = try SCSISupportedCommands.report(options: 1, timeouts: false, opcode: 0x8B, serviceAction: 0)
        #expect(one.getInteger(at: 1, as: UInt8.self)! & 0x07 == 3)
        #expect(one.getInteger(at: 5, as: UInt8.self)! & 0x18 == 0x18)  // DPO and FUA are looked at.
    }

    @Test("ORWRITE ORs each byte sent into the stored byte")
    func orWriteCombines() {
        let stored = ByteBuffer(bytes: [0x00, 0xA5, 0x0F, 0xFF])
        let mask = ByteBuffer(bytes: [0x5A, 0x5A, 0xF0, 0x00])
        #expect(Array(SCSIOrWrite.combine(stored, with: mask).readableBytesView) == [0x5A, 0xFF, 0xFF, 0xFF])
        #expect(Array(SCSIOrWrite.combine(ByteBuffer(bytes: [0x01]), with: mask).readableBytesView) == [0x5B, 0x5A, 0xF0, 0x00])
    }
}
