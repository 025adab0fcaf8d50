import CairnEngine
import Glibc

/// The durable half of the write-logging method's lookup table: the blocks image B holds in its log,
/// as an append-only file of big-endian block numbers. Entries are appended (and synced) by a FLUSH
/// (or FUA) after the pool commit that made their log blocks durable, so after a crash every entry read
/// back names a complete block, and every block a FLUSH covered is named.
/// Entries are never removed while the backup runs; the file is deleted once the log is merged.
final class LogTableJournal: @unchecked Sendable {
    // @unchecked: the descriptor is only written under the range lock of the block being added, and
    // appends of 8 bytes with O_APPEND are atomic with respect to each other.
    let path: String
    private let descriptor: Int32

    init(path: String) throws {
        self.path = path
        descriptor = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else {
            throw EngineError(.ioFailure, "cannot open the log table \(path): \(String(cString: strerror(errno)))")
        }
    }

    deinit { close(descriptor) }

    /// Appends `blocks` and makes them durable.
    func append(_ blocks: [UInt64]) throws {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(blocks.count * 8)
        for block in blocks { Swift.withUnsafeBytes(of: block.bigEndian) { bytes.append(contentsOf: $0) } }
        let written = bytes.withUnsafeBytes { Glibc.write(descriptor, $0.baseAddress!, $0.count) }
        guard written == bytes.count, fdatasync(descriptor) == 0 else {
            throw EngineError(.ioFailure, "cannot extend the log table \(path): \(String(cString: strerror(errno)))")
        }
    }

    /// The blocks recorded in the file at `path` (a torn last entry is ignored: it was never synced).
    static func load(path: String) -> Set<UInt64> {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return [] }
        defer { close(fd) }
        var blocks: Set<UInt64> = []
        var buffer = [UInt8](repeating: 0, count: 8 * 4096)
        var pending: [UInt8] = []
        while true {
            let n = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress!, $0.count) }
            if n <= 0 { break }
            pending.append(contentsOf: buffer[0..<n])
            let whole = pending.count / 8 * 8
            for start in stride(from: 0, to: whole, by: 8) {
                var value: UInt64 = 0
                for byte in pending[start..<start + 8] { value = value << 8 | UInt64(byte) }
                blocks.insert(value)
            }
            pending.removeFirst(whole)
        }
        return blocks
    }
}
