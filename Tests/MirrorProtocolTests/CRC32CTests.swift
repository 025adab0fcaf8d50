import CairnTestSupport
import MirrorProtocol
import Testing

@Suite("CRC-32C")
struct CRC32CTests {
    /// Check values from RFC 3720 appendix B.4 (iSCSI) and the common "123456789" check string.
    @Test("known vectors")
    func vectors() {
        #expect(CRC32C.checksum(Array("123456789".utf8)) == 0xE306_9283)
        #expect(CRC32C.checksum([UInt8](repeating: 0, count: 32)) == 0x8A91_36AA)
        #expect(CRC32C.checksum([UInt8](repeating: 0xFF, count: 32)) == 0x62A8_AB43)
        #expect(CRC32C.checksum((0..<32).map { UInt8($0) }) == 0x46DD_794E)
        #expect(CRC32C.checksum((0..<32).map { UInt8(31 - $0) }) == 0x113F_DB5C)
        #expect(CRC32C.checksum([UInt8]()) == 0)
    }

    /// The slicing-by-8 path agrees with the byte-at-a-time definition at every length and split.
    @Test("slicing agrees with the bitwise definition, and continuation works")
    func agreesWithReference() {
        var generator = SeededGenerator(seed: 0xC0FFEE)
        for length in [1, 7, 8, 9, 15, 16, 17, 63, 64, 65, 1000, 4096] {
            let bytes = (0..<length).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
            #expect(CRC32C.checksum(bytes) == Self.reference(bytes), "length \(length)")
            #expect(bytes.withUnsafeBytes { CRC32C.portableChecksum($0) } == Self.reference(bytes), "length \(length)")
            let split = length / 3
            let continued = CRC32C.checksum(bytes[split...], continuing: CRC32C.checksum(bytes[..<split]))
            #expect(continued == Self.reference(bytes), "split at \(split) of \(length)")
        }
    }

    /// The instruction path folds 256-byte blocks with carry-less multiplies (AVX-512) or cuts long buffers
    /// into three streams (8 KiB and 256-byte stream lengths) joined the same way: random lengths around and
    /// across those blocks, at every start alignment, continuing from random CRCs, must equal the portable
    /// reference.
    @Test("folding and three-stream paths agree with the reference on random buffers", arguments: [UInt64(0x5EED_C3C3)])
    func streamsAgree(seed: UInt64) {
        var generator = SeededGenerator(seed: seed)
        let bytes = (0..<(3 * 8192 * 3 + 4096)).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
        let boundaries = [0, 1, 7, 8, 255, 256, 257, 511, 512, 513, 767, 768, 769, 3 * 768, 4096, 24575, 24576, 24577, 2 * 24576 + 768 + 5, 70000]
        bytes.withUnsafeBytes { all in
            for round in 0..<400 {
                let start = Int(generator.next() % 64)
                let length = round < boundaries.count
                    ? boundaries[round] : Int(generator.next() % UInt64(all.count - start))
                let crc = round % 2 == 0 ? 0 : UInt32(truncatingIfNeeded: generator.next())
                let slice = UnsafeRawBufferPointer(rebasing: all[start..<(start + length)])
                let expected = CRC32C.portableChecksum(slice, continuing: crc)
                #expect(CRC32C.checksum(slice, continuing: crc) == expected,
                        "seed \(seed): start \(start), length \(length), initial CRC \(crc)")
            }
        }
    }

    static func reference(_ bytes: [UInt8]) -> UInt32 {
        var crc: UInt32 = 0xFFFF_FFFF
        for byte in bytes {
            crc ^= UInt32(byte)
            for _ in 0..<8 { crc = crc & 1 != 0 ? (crc >> 1) ^ 0x82F6_3B78 : crc >> 1 }
        }
        return ~crc
    }
}

