import ISCSIProtocol
import NIOCore
import Testing

@Suite struct ISCSIPDUCodecTests {
    @Test func crc32cMatchesTheRFCVectors() {
        // RFC 3720 Appendix B.4: the digest of 32 zero bytes goes on the wire as aa 36 91 8a.
        let zeros = [UInt8](repeating: 0, count: 32)
        #expect(zeros.withUnsafeBytes { ISCSIDigest.crc32c($0) } == 0x8A91_36AA)
        let ones = [UInt8](repeating: 0xFF, count: 32)
        #expect(ones.withUnsafeBytes { ISCSIDigest.crc32c($0) } == 0x62A8_AB43)
        #expect(Array("123456789".utf8).withUnsafeBytes { ISCSIDigest.crc32c($0) } == 0xE306_9283)
    }

    func samplePDU(dataLength: Int) -> ISCSIPDU {
        var pdu = ISCSIPDU(opcode: .scsiCommand, data: ByteBuffer(bytes: (0..<dataLength).map { UInt8($0 & 0xFF) }))
        pdu.flags = 0xA1
        pdu.initiatorTaskTag = 0x1234_5678
        pdu.setUInt32(4096, 20)
        pdu.setByte(0x2A, 32)
        return pdu
    }

    @Test(arguments: [(false, false), (true, false), (false, true), (true, true)])
    func roundTripsWithAndWithoutDigests(headerDigest: Bool, dataDigest: Bool) throws {
        for length in [0, 1, 3, 4, 5, 4096] {
            let pdu = samplePDU(dataLength: length)
            var wire = pdu.encoded(headerDigest: headerDigest, dataDigest: dataDigest)
            #expect(wire.readableBytes % 4 == 0)
            var decoder = ISCSIPDUDecoder()
            decoder.headerDigest = headerDigest
            decoder.dataDigest = dataDigest
            decoder.maximumDataSegmentLength = 1 << 20
            // Byte by byte: nothing is returned or consumed until the whole PDU is there.
            var partial = ByteBuffer()
            for _ in 0..<(wire.readableBytes - 1) {
                partial.writeInteger(wire.readInteger(as: UInt8.self)!)
                #expect(try decoder.decode(&partial) == nil)
            }
            partial.writeInteger(wire.readInteger(as: UInt8.self)!)
            let decoded = try #require(try decoder.decode(&partial))
            #expect(partial.readableBytes == 0)
            #expect(decoded.opcode == .scsiCommand)
            #expect(decoded.initiatorTaskTag == 0x1234_5678)
            #expect(decoded.dataSegmentLength == UInt32(length))
            #expect(decoded.data == pdu.data)
            #expect(decoded.flags == 0xA1)
        }
    }

    @Test func aCorruptedHeaderDigestEndsTheStream() {
        var wire = samplePDU(dataLength: 8).encoded(headerDigest: true, dataDigest: false)
        wire.setInteger(UInt8(0x77), at: 30)
        var decoder = ISCSIPDUDecoder()
        decoder.headerDigest = true
        #expect(throws: ISCSIDecodeError.headerDigestMismatch) { try decoder.decode(&wire) }
    }

    @Test func aCorruptedDataDigestConsumesThePDUAndReportsItsHeader() throws {
        var wire = samplePDU(dataLength: 8).encoded(headerDigest: false, dataDigest: true)
        wire.writeImmutableBuffer(samplePDU(dataLength: 0).encoded(headerDigest: false, dataDigest: true))
        wire.setInteger(UInt8(0x77), at: 50)
        var decoder = ISCSIPDUDecoder()
        decoder.dataDigest = true
        do {
            _ = try decoder.decode(&wire)
            Issue.record("a bad data digest was accepted")
        } catch .dataDigestMismatch(let header) {
            #expect(header.readableBytes == 48)
        }
        // The next PDU is still read: the boundaries held.
        #expect(try decoder.decode(&wire)?.opcode == .scsiCommand)
    }

    @Test func aDataSegmentOverTheDeclaredLimitIsRefusedBeforeItArrives() {
        var wire = samplePDU(dataLength: 9000).encoded()
        wire = wire.getSlice(at: 0, length: 48)!
        var decoder = ISCSIPDUDecoder()
        #expect(throws: ISCSIDecodeError.dataSegmentTooLong(length: 9000, limit: 8192)) { try decoder.decode(&wire) }
    }

    @Test func textParametersParseAndEncode() throws {
        let encoded = ISCSITextParameters.encode([("InitiatorName", "iqn.x:y"), ("HeaderDigest", "None,CRC32C")])
        let pairs = try ISCSITextParameters.parse(encoded)
        #expect(pairs.map(\.key) == ["InitiatorName", "HeaderDigest"])
        #expect(pairs.map(\.value) == ["iqn.x:y", "None,CRC32C"])
        #expect(throws: ISCSITextParameters.Malformed.self) {
            try ISCSITextParameters.parse(ByteBuffer(bytes: Array("NoEquals\0".utf8)))
        }
        #expect(throws: ISCSITextParameters.Malformed.self) {
            try ISCSITextParameters.parse(ByteBuffer(bytes: Array("=value\0".utf8)))
        }
    }

    @Test func commandWindowAdmitsInOrderAndIgnoresTheRest() {
        var window = ISCSICommandWindow(expCmdSN: 10, statSN: 5)
        #expect(window.maxCmdSN == 10 + ISCSILimits.commandWindow - 1)
        #expect(window.admit(cmdSN: 10, immediate: false) == .accept)
        #expect(window.admit(cmdSN: 10, immediate: false) == .ignore)  // a duplicate
        #expect(window.admit(cmdSN: 99, immediate: false) == .ignore)  // a gap
        #expect(window.admit(cmdSN: 5, immediate: true) == .accept)  // immediate: no CmdSN taken
        #expect(window.expCmdSN == 11)
        #expect(window.maxCmdSN == 11 + ISCSILimits.commandWindow - 2)
        window.finish()
        #expect(window.maxCmdSN == 11 + ISCSILimits.commandWindow - 1)
        #expect(window.takeStatSN() == 5)
        #expect(window.takeStatSN() == 6)
        #expect(ISCSICommandWindow.isAfter(1, 0xFFFF_FFFF))
    }
}
