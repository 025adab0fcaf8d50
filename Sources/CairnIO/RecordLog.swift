import CMirrorCRC
import Synchronization

/// An append-only file of records, each with its length and a CRC-32C, synced on every append.
///
/// Layout of one record: length (UInt32, little-endian), CRC-32C of the length bytes and the payload
/// (UInt32, little-endian), payload. A power cut during an append can leave a torn last record (short,
/// garbage, or zeros where the filesystem extended the file but lost the data): that tail was never
/// acknowledged, so opening the log reports it ("truncated at record N") and cuts it off. A record
/// that fails its checksum with valid records after it cannot come from a torn append: that is damage,
/// and reading fails with an error naming the file and the record, never dropping it silently.
public final class RecordLog: Sendable {
    /// Largest record accepted (1 MiB): state logs hold small entries; a larger length field in a file
    /// is garbage from a torn write.
    public static let maximumRecordLength = 1 << 20
    /// Length and checksum before each payload.
    static let headerLength = 8

    /// What a log held when it was read.
    public struct Contents: Sendable, Equatable {
        /// The payloads of the valid records, in order.
        public var records: [[UInt8]]
        /// Bytes the valid records occupy (where the next append goes).
        public var validLength: UInt64
        /// Index of the first record lost to a torn tail, or nil when the file ended cleanly.
        public var truncatedAt: Int?
    }

    /// An unreadable record in the middle of a log.
    public struct DamageError: Error, Sendable, CustomStringConvertible {
        public var path: String
        public var record: Int
        public var offset: UInt64
        public var description: String {
            "\(path): record \(record) at byte \(offset) fails its checksum and records follow it; the file is damaged"
        }
    }

    public let path: String
    private let fileSystem: any DurableFileSystem
    private struct State {
        var handle: any DurableFileHandle
        var length: UInt64
        /// Set by the first failed write or sync: the disk may have dropped data already reported as
        /// written, so the log accepts nothing more (a later sync could succeed over the hole).
        var failure: (any Error)?
    }
    private let state: Mutex<State>

    /// Opens (creating it durably when missing) the log at `path`, cutting off a torn tail.
    public init(path: String, in fileSystem: any DurableFileSystem = PosixFileSystem()) throws {
        self.path = path
        self.fileSystem = fileSystem
        let existing = try Self.read(path, in: fileSystem) ?? Contents(records: [], validLength: 0, truncatedAt: nil)
        let (handle, created) = try fileSystem.openForWriting(path)
        if created { try fileSystem.syncDirectory(DurableFileSystemPaths.directory(of: path)) }
        if existing.truncatedAt != nil {
            try handle.truncate(to: existing.validLength)
            try handle.sync()
        }
        state = Mutex(State(handle: handle, length: existing.validLength))
        opened = existing
    }

    /// What the file held when it was opened.
    public let opened: Contents

    /// Appends `records` and makes them durable. After a failure every later call throws that failure.
    public func append(_ records: [[UInt8]]) throws {
        guard !records.isEmpty else { return }
        var bytes: [UInt8] = []
        for record in records { Self.encode(record, into: &bytes) }
        try state.withLock { s in
            if let failure = s.failure { throw failure }
            do {
                try s.handle.write(bytes, at: s.length)
                try s.handle.sync()
                s.length += UInt64(bytes.count)
            } catch {
                s.failure = error
                throw error
            }
        }
    }

    /// The records of the log at `path`, or nil when there is no file. Throws `DamageError` for a bad
    /// record in the middle.
    public static func read(_ path: String, in fileSystem: any DurableFileSystem = PosixFileSystem()) throws
        -> Contents?
    {
        guard let bytes = try fileSystem.contents(of: path) else { return nil }
        return try decode(bytes, path: path)
    }

    static func encode(_ payload: [UInt8], into bytes: inout [UInt8]) {
        precondition(payload.count <= maximumRecordLength, "record of \(payload.count) bytes")
        let length = UInt32(payload.count)
        let lengthBytes = withUnsafeBytes(of: length.littleEndian) { Array($0) }
        var crc = lengthBytes.withUnsafeBytes { mirror_crc32c(0, $0.baseAddress!, 4) }
        crc = payload.withUnsafeBytes { $0.isEmpty ? crc : mirror_crc32c(crc, $0.baseAddress!, $0.count) }
        bytes += lengthBytes
        withUnsafeBytes(of: crc.littleEndian) { bytes += $0 }
        bytes += payload
    }

    static func decode(_ bytes: [UInt8], path: String) throws -> Contents {
        var records: [[UInt8]] = []
        var offset = 0
        func torn() -> Contents { Contents(records: records, validLength: UInt64(offset), truncatedAt: records.count) }
        while offset < bytes.count {
            let remaining = bytes.count - offset
            guard remaining >= headerLength else { return torn() }
            let length = Int(load(bytes, offset))
            let stored = load(bytes, offset + 4)
            guard length <= maximumRecordLength, length <= remaining - headerLength else { return torn() }
            let end = offset + headerLength + length
            let crc = bytes.withUnsafeBytes { raw in
                let start = mirror_crc32c(0, raw.baseAddress! + offset, 4)
                return length == 0 ? start : mirror_crc32c(start, raw.baseAddress! + offset + headerLength, length)
            }
            if crc != stored {
                // The last record, or garbage to the end of the file: a torn append. Otherwise damage.
                if end == bytes.count || bytes[offset...].allSatisfy({ $0 == 0 }) { return torn() }
                throw DamageError(path: path, record: records.count, offset: UInt64(offset))
            }
            records.append(Array(bytes[(offset + headerLength)..<end]))
            offset = end
        }
        return Contents(records: records, validLength: UInt64(offset), truncatedAt: nil)
    }

    /// The little-endian UInt32 at `offset`.
    private static func load(_ bytes: [UInt8], _ offset: Int) -> UInt32 {
        var value: UInt32 = 0
        for i in (0..<4).reversed() { value = value << 8 | UInt32(bytes[offset + i]) }
        return value
    }
}

/// Path arithmetic shared by the durable-file helpers.
enum DurableFileSystemPaths {
    static func directory(of path: String) -> String { PosixFileSystem.directory(of: path) }
}
