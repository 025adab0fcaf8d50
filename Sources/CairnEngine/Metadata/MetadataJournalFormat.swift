import CMirrorCRC

/// The on-disk form of the metadata journal: a sequence of frames, one per group commit, each the
/// changes of one `MetadataTransaction` that only replaces chunk version lists, volume and snapshot
/// records and clone map blocks (the common changes; anything else goes to the metadata store directly).
///
/// Frame, little-endian: magic "CJNL" (u32), sequence number (u64), payload length (u32), CRC-32C of
/// the sequence number, length and payload (u32), payload. Payload: entries, each a tag byte then:
///
/// | tag | entry |
/// |---|---|
/// | 1 chunk | volume (u64), chunk (u64), version count (u32), versions (`VersionCodec`, 32 bytes each) |
/// | 2 volume | id, size (u64), chunk size, epoch (u32), created (i64), parent id (u64, 0: none), parent epoch (u32), name, preserve store |
/// | 3 snapshot | volume (u64), epoch (u32), size (u64), created (i64), name |
/// | 4 clone map block | source (u64), kind (u8), block (u32), bits (u32 length, 0xFFFF_FFFF: absent, then bytes) |
///
/// Strings are a u16 length (0xFFFF: absent) and UTF-8 bytes. A frame is valid when its magic and CRC
/// match and its sequence number is the previous frame's plus one: a torn or stale frame ends the journal.
@_spi(Testing)
public enum MetadataJournalFormat {
    static let magic: UInt32 = 0x4C4E_4A43  // "CJNL"
    public static let headerSize = 20

    /// The changes a frame can carry; nil when `transaction` holds anything else.
    public static func encodePayload(_ t: MetadataTransaction) -> [UInt8]? {
        guard t.upsertStores.isEmpty, t.upsertSlotFiles.isEmpty, t.deleteVolumes.isEmpty, t.deleteSnapshots.isEmpty,
            t.deleteCloneGroups.isEmpty, t.upsertCloneGroups.isEmpty
        else { return nil }
        var out = ByteWriter()
        for v in t.upsertVolumes {
            out.put(UInt8(2))
            out.put(v.id)
            out.put(v.size)
            out.put(v.chunkSize)
            out.put(v.epoch)
            out.put(v.createdAt)
            out.put(v.parent?.volumeID ?? 0)
            out.put(v.parent?.epoch ?? 0)
            out.put(string: v.name)
            out.put(string: v.preserveStore)
        }
        for s in t.upsertSnapshots {
            out.put(UInt8(3))
            out.put(s.volumeID)
            out.put(s.epoch)
            out.put(s.size)
            out.put(s.createdAt)
            out.put(string: s.name)
        }
        for block in t.cloneMapBlocks {
            out.put(UInt8(4))
            out.put(block.sourceID)
            out.put(block.kind.rawValue)
            out.put(block.block)
            out.put(UInt32(block.bits.map { UInt32($0.count) } ?? UInt32.max))
            if let bits = block.bits { out.bytes += bits }
        }
        for entry in t.chunks {
            out.put(UInt8(1))
            out.put(entry.volumeID)
            out.put(entry.chunk)
            out.put(UInt32(entry.versions.count))
            out.bytes += VersionCodec.encode(entry.versions)
        }
        return out.bytes
    }

    /// A whole frame around `payload`.
    public static func frame(sequence: UInt64, payload: [UInt8]) -> [UInt8] {
        var out = ByteWriter()
        out.bytes.reserveCapacity(headerSize + payload.count)
        out.put(magic)
        out.put(sequence)
        out.put(UInt32(payload.count))
        out.put(checksum(sequence: sequence, payload: payload))
        out.bytes += payload
        return out.bytes
    }

    public static func checksum(sequence: UInt64, payload: [UInt8]) -> UInt32 {
        var head = ByteWriter()
        head.put(sequence)
        head.put(UInt32(payload.count))
        let crc = head.bytes.withUnsafeBytes { mirror_crc32c(0, $0.baseAddress, $0.count) }
        return payload.withUnsafeBytes { mirror_crc32c(crc, $0.baseAddress, $0.count) }
    }

    /// Parses a frame header at the start of `bytes`: (sequence, payload length, CRC), or nil.
    public static func header(_ bytes: ArraySlice<UInt8>) -> (sequence: UInt64, length: Int, crc: UInt32)? {
        guard bytes.count >= headerSize else { return nil }
        var reader = ByteReader(bytes: bytes)
        guard reader.get(UInt32.self) == magic, let sequence = reader.get(UInt64.self),
            let length = reader.get(UInt32.self), let crc = reader.get(UInt32.self)
        else { return nil }
        return (sequence, Int(length), crc)
    }

    /// Adds a frame's entries to `t` (later entries replace earlier ones when applied in order).
    public static func decodePayload(_ payload: ArraySlice<UInt8>, into t: inout MetadataTransaction) throws {
        var r = ByteReader(bytes: payload)
        func fail() -> EngineError { EngineError(.corrupt, "metadata journal: malformed entry in a valid frame") }
        while !r.atEnd {
            guard let tag = r.get(UInt8.self) else { throw fail() }
            switch tag {
            case 1:
                guard let volume = r.get(UInt64.self), let chunk = r.get(UInt64.self), let count = r.get(UInt32.self),
                    let raw = r.take(Int(count) * VersionCodec.recordSize), let versions = VersionCodec.decode(Array(raw))
                else { throw fail() }
                t.chunks.append((volume, chunk, versions))
            case 2:
                guard let id = r.get(UInt64.self), let size = r.get(UInt64.self), let chunkSize = r.get(UInt32.self),
                    let epoch = r.get(UInt32.self), let created = r.get(Int64.self), let parentID = r.get(UInt64.self),
                    let parentEpoch = r.get(UInt32.self), let name = r.getString(), let store = r.getString()
                else { throw fail() }
                t.upsertVolumes.removeAll { $0.id == id }
                t.upsertVolumes.append(
                    VolumeRecord(
                        id: id, name: name ?? "", size: size, chunkSize: chunkSize, epoch: epoch,
                        parent: parentID == 0 ? nil : ParentLink(volumeID: parentID, epoch: parentEpoch),
                        createdAt: created, preserveStore: store))
            case 3:
                guard let volume = r.get(UInt64.self), let epoch = r.get(UInt32.self), let size = r.get(UInt64.self),
                    let created = r.get(Int64.self), let name = r.getString()
                else { throw fail() }
                t.upsertSnapshots.append(
                    SnapshotRecord(volumeID: volume, name: name ?? "", epoch: epoch, size: size, createdAt: created))
            case 4:
                guard let source = r.get(UInt64.self), let rawKind = r.get(UInt8.self),
                    let kind = CloneMapKind(rawValue: rawKind), let block = r.get(UInt32.self),
                    let length = r.get(UInt32.self)
                else { throw fail() }
                var bits: [UInt8]?
                if length != UInt32.max {
                    guard let raw = r.take(Int(length)) else { throw fail() }
                    bits = Array(raw)
                }
                t.cloneMapBlocks.append(CloneMapBlock(sourceID: source, kind: kind, block: block, bits: bits))
            default:
                throw fail()
            }
        }
    }
}

/// Little-endian serialization into a growing byte array.
struct ByteWriter {
    var bytes: [UInt8] = []

    mutating func put<T: FixedWidthInteger>(_ value: T) {
        withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) }
    }

    mutating func put(string: String?) {
        guard let string else { return put(UInt16.max) }
        let utf8 = Array(string.utf8)
        put(UInt16(utf8.count))
        bytes += utf8
    }
}

/// Little-endian reads from a byte slice; every read returns nil past the end.
struct ByteReader {
    var bytes: ArraySlice<UInt8>
    var atEnd: Bool { bytes.isEmpty }

    mutating func take(_ count: Int) -> ArraySlice<UInt8>? {
        guard count >= 0, bytes.count >= count else { return nil }
        defer { bytes = bytes.dropFirst(count) }
        return bytes.prefix(count)
    }

    mutating func get<T: FixedWidthInteger>(_: T.Type) -> T? {
        guard let raw = take(MemoryLayout<T>.size) else { return nil }
        var value = T.zero
        for (index, byte) in raw.enumerated() { value |= T(byte) << (8 * index) }
        return value
    }

    /// A string, `.some(nil)` when stored as absent, nil when the bytes run out.
    mutating func getString() -> String?? {
        guard let length = get(UInt16.self) else { return nil }
        if length == UInt16.max { return .some(nil) }
        guard let raw = take(Int(length)) else { return nil }
        return .some(String(decoding: raw, as: UTF8.self))
    }
}
