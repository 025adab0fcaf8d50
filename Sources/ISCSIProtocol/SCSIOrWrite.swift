import NIOCore

/// ORWRITE's operation (SBC-4 §5.11, BMOP 000b): each stored byte ORed with the byte sent for it.
public enum SCSIOrWrite {
    /// `stored` | `mask` over `mask`'s length; a `stored` shorter than `mask` counts as zeros past its end.
    public static func combine(_ stored: ByteBuffer, with mask: ByteBuffer) -> ByteBuffer {
        var result = ByteBuffer()
        result.reserveCapacity(mask.readableBytes)
        stored.withUnsafeReadableBytes { a in
            mask.withUnsafeReadableBytes { b in
                _ = result.writeWithUnsafeMutableBytes(minimumWritableBytes: b.count) { out in
                    for index in 0..<b.count { out[index] = (index < a.count ? a[index] : 0) | b[index] }
                    return b.count
                }
            }
        }
        return result
    }
}
