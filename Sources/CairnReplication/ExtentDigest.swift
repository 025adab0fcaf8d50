import CairnEngine
import Crypto

/// SHA-256 of a range of a volume as hosts read it (holes as zeros): what online verify compares on both
/// sides. A cryptographic digest rather than the frames' CRC: equal digests are the proof that the
/// extents are equal, not just likely equal.
enum ExtentDigest {
    /// Blocking (reads the volume): on an I/O thread.
    static func compute(pool: Pool, volumeID: UInt64, offset: UInt64, length: UInt64) throws -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: Int(length))
        _ = try bytes.withUnsafeMutableBytes { try pool.read(volumeID: volumeID, offset: offset, into: $0) }
        return Array(SHA256.hash(data: bytes))
    }
}
