import NIOCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Byte comparison for VERIFY (BYTCHK) and COMPARE AND WRITE: memcmp for the common case that the data
/// matches, a scan only to locate the first difference (the INFORMATION field of a MISCOMPARE).
public enum SCSICompare {
    /// The offset of the first byte where `stored` and `expected` differ over `expected`'s length; nil
    /// when they match. A `stored` shorter than `expected` differs where it ends.
    public static func firstDifference(_ stored: ByteBuffer, _ expected: ByteBuffer) -> UInt32? {
        stored.withUnsafeReadableBytes { a in
            expected.withUnsafeReadableBytes { b in
                let count = min(a.count, b.count)
                if count > 0, memcmp(a.baseAddress!, b.baseAddress!, count) != 0 {
                    for index in 0..<count where a[index] != b[index] { return UInt32(index) }
                }
                return a.count < b.count ? UInt32(a.count) : nil
            }
        }
    }
}
