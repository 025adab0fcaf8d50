import CMirrorCRC
import NIOCore

/// The header and data digests of RFC 7143 §11.1: CRC-32C (the iSCSI polynomial is Castagnoli's), sent
/// least significant byte first, as Linux's target and libiscsi put it on the wire. Uses the CPU's CRC32
/// instruction through the same C shim the mirror protocol uses.
public enum ISCSIDigest {
    /// CRC-32C of `bytes`.
    public static func crc32c(_ bytes: UnsafeRawBufferPointer) -> UInt32 {
        guard let base = bytes.baseAddress else { return 0 }
        return mirror_crc32c(0, base, bytes.count)
    }

    /// CRC-32C of the readable bytes of `buffer` in `range` (relative to its reader index).
    public static func crc32c(_ buffer: ByteBuffer, at index: Int, length: Int) -> UInt32 {
        buffer.withUnsafeReadableBytes { raw in
            let start = index - buffer.readerIndex
            return crc32c(UnsafeRawBufferPointer(rebasing: raw[start..<(start + length)]))
        }
    }

    /// CRC-32C of a whole buffer's readable bytes.
    public static func crc32c(_ buffer: ByteBuffer) -> UInt32 {
        buffer.withUnsafeReadableBytes { crc32c($0) }
    }
}
