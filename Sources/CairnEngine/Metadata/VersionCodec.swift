/// The on-disk form of one chunk's version list: the `versions` BLOB of a row of `chunks`.
///
/// One row per chunk, not per version: a commit replaces a chunk's whole list anyway, so this is one
/// statement per dirty chunk instead of a delete plus an insert per version (measured: 26k dirty chunks
/// took 250 ms of SQLite time per commit with a row per version).
///
/// Layout: 32 bytes per version, oldest first, little-endian: birth (u32), reserved (u32, zero), slot
/// address (u64), data mask (u64), defined mask (u64).
enum VersionCodec {
    static let recordSize = 32

    static func encode(_ versions: [ChunkVersion]) -> [UInt8] {
        var bytes = [UInt8]()
        bytes.reserveCapacity(versions.count * recordSize)
        func put<T: FixedWidthInteger>(_ value: T) {
            withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) }
        }
        for v in versions {
            put(v.birth)
            put(UInt32(0))
            put(v.slot.rawValue)
            put(v.dataMask)
            put(v.definedMask)
        }
        return bytes
    }

    /// Decodes a list; nil when the blob is not a whole number of records.
    static func decode(_ bytes: [UInt8]) -> [ChunkVersion]? {
        guard bytes.count % recordSize == 0 else { return nil }
        func get<T: FixedWidthInteger>(_: T.Type, _ offset: Int) -> T {
            var value = T.zero
            for index in 0..<MemoryLayout<T>.size { value |= T(bytes[offset + index]) << (8 * index) }
            return value
        }
        return stride(from: 0, to: bytes.count, by: recordSize).map { base in
            ChunkVersion(
                birth: get(UInt32.self, base), slot: SlotAddress(rawValue: get(UInt64.self, base + 8)),
                dataMask: get(UInt64.self, base + 16), definedMask: get(UInt64.self, base + 24))
        }
    }
}
