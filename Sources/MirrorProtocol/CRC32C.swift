import CMirrorCRC

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum every mirror frame carries.
///
/// Castagnoli rather than the zlib CRC-32 because it is what storage protocols use (iSCSI, SCTP, ext4
/// metadata, DRBD's `crc32c` data-integrity-alg) and it detects more error patterns at these lengths.
/// Neither swift-crypto nor swift-nio offers it. `checksum` uses the CPU's CRC32 instruction through the
/// `CMirrorCRC` shim (a table in C where the CPU lacks it); `portableChecksum` is a slicing-by-8 Swift
/// implementation kept as the reference the tests hold the shim to.
public enum CRC32C {
    /// True when frames are checksummed by the CPU instruction.
    public static var usesHardware: Bool { mirror_crc32c_hardware() != 0 }

    /// The CRC-32C of `bytes`, continuing from `crc` (the result of an earlier call, 0 to start).
    public static func checksum(_ bytes: UnsafeRawBufferPointer, continuing crc: UInt32 = 0) -> UInt32 {
        guard let base = bytes.baseAddress else { return crc }
        return mirror_crc32c(crc, base, bytes.count)
    }

    /// The reflected Castagnoli polynomial.
    static let polynomial: UInt32 = 0x82F6_3B78

    /// Eight tables of 256 entries, flat: entry `k * 256 + b` is the CRC of byte b followed by k zero
    /// bytes (slicing-by-8).
    static let table: [UInt32] = {
        var table = [UInt32](repeating: 0, count: 8 * 256)
        for byte in 0..<256 {
            var crc = UInt32(byte)
            for _ in 0..<8 { crc = (crc & 1) != 0 ? (crc >> 1) ^ polynomial : crc >> 1 }
            table[byte] = crc
        }
        for byte in 0..<256 {
            var crc = table[byte]
            for k in 1..<8 {
                crc = table[Int(crc & 0xFF)] ^ (crc >> 8)
                table[k * 256 + byte] = crc
            }
        }
        return table
    }()

    /// The same CRC in portable Swift (slicing-by-8): the reference implementation.
    public static func portableChecksum(_ bytes: UnsafeRawBufferPointer, continuing crc: UInt32 = 0) -> UInt32 {
        var crc = ~crc
        let count = bytes.count
        var index = 0
        table.withUnsafeBufferPointer { t in
            while count - index >= 8 {
                let word = crc ^ (UInt32(bytes[index]) | UInt32(bytes[index + 1]) << 8
                    | UInt32(bytes[index + 2]) << 16 | UInt32(bytes[index + 3]) << 24)
                let a = t[7 * 256 + Int(word & 0xFF)] ^ t[6 * 256 + Int((word >> 8) & 0xFF)]
                let b = t[5 * 256 + Int((word >> 16) & 0xFF)] ^ t[4 * 256 + Int(word >> 24)]
                let c = t[3 * 256 + Int(bytes[index + 4])] ^ t[2 * 256 + Int(bytes[index + 5])]
                let d = t[256 + Int(bytes[index + 6])] ^ t[Int(bytes[index + 7])]
                crc = a ^ b ^ c ^ d
                index += 8
            }
            while index < count {
                crc = t[Int((crc ^ UInt32(bytes[index])) & 0xFF)] ^ (crc >> 8)
                index += 1
            }
        }
        return ~crc
    }

    /// The CRC-32C of a byte sequence (tests, small buffers).
    public static func checksum(_ bytes: some Sequence<UInt8>, continuing crc: UInt32 = 0) -> UInt32 {
        Array(bytes).withUnsafeBytes { checksum($0, continuing: crc) }
    }
}
