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
        var generator = SplitMix(seed: 0xC0FFEE)
        for length in [1, 7, 8, 9, 15, 16, 17, 63, 64, 65, 1000, 4096] {
            let bytes = (0..<length).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
            #expect(CRC32C.checksum(bytes) == Self.reference(bytes), "length \(length)")
            #expect(bytes.withUnsafeBytes { CRC32C.portableChecksum($0) } == Self.reference(bytes), "length \(length)")
            let split = length / 3
            let continued = CRC32C.checksum(bytes[split...], continuing: CRC32C.checksum(bytes[..<split]))
            #expect(continued == Self.reference(bytes), "split at \(split) of \(length)")
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

/// A tiny deterministic generator (tests print their seed).
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
