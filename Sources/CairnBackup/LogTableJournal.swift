import CairnEngine
import CairnIO
import Logging

/// The durable half of the write-logging method's lookup table: the blocks image B holds in its log,
/// as a `RecordLog` whose records are batches of big-endian block numbers. A batch is appended (and
/// synced) by a FLUSH (or FUA) after the pool commit that made its log blocks durable, so after a crash
/// every entry read back names a complete block, and every block a FLUSH covered is named.
/// Entries are never removed while the backup runs; the file is deleted once the log is merged.
///
/// A failed append is final (`RecordLog`): the caller stops the pool (`Pool.failStop`) rather than
/// append the batch again after a sync that the kernel reported once and may not report again.
final class LogTableJournal: Sendable {
    let path: String
    private let log: RecordLog
    /// The blocks the file held when it was opened.
    let entries: Set<UInt64>

    init(path: String, fileSystem: any DurableFileSystem = PosixFileSystem(), logger: Logger? = nil) throws {
        self.path = path
        do {
            log = try RecordLog(path: path, in: fileSystem)
        } catch {
            throw EngineError(.ioFailure, "cannot open the log table \(path): \(error)", cause: error)
        }
        if let record = log.opened.truncatedAt {
            // A batch whose append never returned: its FLUSH was not acknowledged.
            logger?.warning("log table truncated at record \(record) (a torn last append)", metadata: ["file": "\(path)"])
        }
        entries = Self.blocks(in: log.opened.records)
    }

    /// Appends `blocks` and makes them durable.
    func append(_ blocks: [UInt64]) throws {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(blocks.count * 8)
        for block in blocks { Swift.withUnsafeBytes(of: block.bigEndian) { bytes.append(contentsOf: $0) } }
        try log.append([bytes])
    }

    /// The blocks recorded in the file at `path` (empty when there is none); a damaged record is an
    /// error naming the file.
    static func load(path: String, fileSystem: any DurableFileSystem = PosixFileSystem()) throws -> Set<UInt64> {
        do {
            return blocks(in: try RecordLog.read(path, in: fileSystem)?.records ?? [])
        } catch {
            throw EngineError(.corrupt, "cannot read the log table \(path): \(error)", cause: error)
        }
    }

    private static func blocks(in records: [[UInt8]]) -> Set<UInt64> {
        var blocks: Set<UInt64> = []
        for record in records {
            for start in stride(from: 0, to: record.count / 8 * 8, by: 8) {
                var value: UInt64 = 0
                for byte in record[start..<start + 8] { value = value << 8 | UInt64(byte) }
                blocks.insert(value)
            }
        }
        return blocks
    }
}
