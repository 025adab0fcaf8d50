import Crypto

/// The part of a DATA record that precedes its payload, computed apart from the writer: tag, offset,
/// length and the record's SHA-256. Sealing is a pure function of (offset, payload), so an archiver may
/// seal records on several threads and hand them to one `ArchiveWriter` in order.
public struct ArchiveDataSeal: Sendable, Hashable {
    /// Volume offset and payload length the seal was computed for.
    public let offset: UInt64
    public let length: Int
    /// tag | offset | length | SHA-256(tag..length + payload): `ArchiveFormat.dataPrefixLength +
    /// ArchiveFormat.digestLength` bytes.
    let prefix: [UInt8]

    /// Seals `payload` as the volume's data at `offset`. The payload must be at most
    /// `ArchiveFormat.maximumDataLength` bytes (the writer checks).
    public init(offset: UInt64, payload: UnsafeRawBufferPointer) {
        var prefix = ArchiveRecordTag.data.bytes
        prefix.reserveCapacity(ArchiveFormat.dataPrefixLength + ArchiveFormat.digestLength)
        prefix.appendBigEndian(offset)
        prefix.appendBigEndian(UInt32(truncatingIfNeeded: payload.count))
        var digest = SHA256()
        digest.update(data: prefix)
        digest.update(bufferPointer: payload)
        prefix.append(contentsOf: digest.finalize())
        self.offset = offset
        self.length = payload.count
        self.prefix = prefix
    }
}
