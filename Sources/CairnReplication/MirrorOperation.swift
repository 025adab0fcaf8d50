import NIOCore

/// A host write as the mirror forwards it to the target.
public enum MirrorOperation: Sendable {
    /// NBD WRITE: the same bytes go to the target.
    case write(offset: UInt64, data: ByteBuffer)
    /// NBD WRITE_ZEROES; `punch`: without NO_HOLE (the space may be released).
    case writeZeroes(offset: UInt64, length: UInt64, punch: Bool)
    /// NBD TRIM (advisory; both sides apply the same rule to the same geometry).
    case trim(offset: UInt64, length: UInt64)
    /// A range the primary changed by other means (COPY_AND_WRITE): its bytes are read back after the
    /// local write and sent as data.
    case localCopy(offset: UInt64, length: UInt64)

    var offset: UInt64 {
        switch self {
        case .write(let offset, _), .writeZeroes(let offset, _, _), .trim(let offset, _), .localCopy(let offset, _): offset
        }
    }

    var length: UInt64 {
        switch self {
        case .write(_, let data): UInt64(data.readableBytes)
        case .writeZeroes(_, let length, _), .trim(_, let length), .localCopy(_, let length): length
        }
    }
}
