/// The backup archive format (docs/ARCHITECTURE.md, "Backups"): a stream that can be written to a pipe
/// (no seeking back), read front to back, and checked piece by piece.
///
/// ```
/// preamble   "CAIRNBAK" | format version u32 | header length u32 | header JSON | SHA-256(header JSON)
/// record     tag "DATA" | offset u64 | length u32 | SHA-256(tag..length + payload) | payload
/// record     tag "ZERO" | offset u64 | length u64 | SHA-256(tag..length)
/// trailer    tag "END!" | records u64 | data bytes u64 | SHA-256(every byte before "END!" but DATA payloads)
/// ```
///
/// Integers are big-endian (as on the NBD wire). Holes are not recorded at all, so they cost nothing.
/// Every record checksums its own position as well as its payload, so a corrupted offset is caught
/// as surely as a corrupted byte of data; the trailer's digest catches records that went missing.
///
/// The trailer's digest chains the records' own digests rather than re-hashing their payloads (a hash
/// list): each payload is covered by its record's SHA-256, which the chain covers, so a changed, lost,
/// moved or reordered byte is caught exactly as before, and the archiver hashes each byte once, not twice
/// (version 1 hashed every payload byte a second time on the one writer thread, which bounded the
/// archiver at one core's SHA-256 rate). Readers still read version 1 archives.
public enum ArchiveFormat {
    /// The first eight bytes of every archive.
    public static let magic: [UInt8] = Array("CAIRNBAK".utf8)
    /// Bumped on any incompatible change; readers refuse versions they do not know.
    public static let version: UInt32 = 2
    /// Versions this reader reads: 1 differs only in that its trailer digest also covers DATA payloads.
    public static let readableVersions: ClosedRange<UInt32> = 1...2
    /// A header larger than this is not one we wrote: refuse before allocating it.
    public static let maximumHeaderLength: UInt32 = 1 << 20
    /// Largest DATA payload. Writers cut extents into pieces of at most this size so that a reader
    /// needs one bounded buffer; 4 MiB is the engine's largest chunk size.
    public static let maximumDataLength: UInt32 = 4 << 20
    /// Bytes of a SHA-256 digest.
    public static let digestLength = 32
    /// Alignment of every recorded range: a 512-byte sector, the smallest unit of a volume.
    public static let sectorSize: UInt64 = 512

    /// Length of the preamble before the header JSON.
    static let preambleLength = 16
    /// tag + offset + length for DATA (u32 length) and ZERO (u64 length).
    static let dataPrefixLength = 16
    static let zeroPrefixLength = 20
    static let trailerPrefixLength = 20
}

/// The four-byte tag that starts a record.
public enum ArchiveRecordTag: String, Sendable, CaseIterable {
    /// Bytes of the volume.
    case data = "DATA"
    /// A range that reads as zeros (in an incremental archive: became zeros since the base).
    case zero = "ZERO"
    /// The trailer; nothing follows it.
    case end = "END!"

    var bytes: [UInt8] { Array(rawValue.utf8) }

    init?(bytes: ArraySlice<UInt8>) {
        guard bytes.allSatisfy({ $0 >= 0x20 && $0 < 0x7F }) else { return nil }
        self.init(rawValue: String(decoding: bytes, as: UTF8.self))
    }
}
