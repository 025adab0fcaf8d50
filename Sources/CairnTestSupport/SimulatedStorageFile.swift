import CairnIO
import Synchronization

/// A slot file in memory that behaves like a file in a volatile page cache over a disk: every change
/// is visible to reads at once, but only what was `sync()`ed is on the "disk". A simulated power cut
/// (`crashImage`) keeps the synced bytes plus an arbitrary subset of later changes, some of them torn.
///
/// The same model covers the direct path (O_DIRECT): a direct write that returned sits in the disk's
/// volatile cache until the next `sync()` (a cache flush), so it too may be lost or torn by a cut. Only
/// `writeDurably` (RWF_DSYNC, FUA) is on the disk when it returns.
public final class SimulatedStorageFile: StorageFile {
    /// Granularity at which an unsynced write can be torn: a disk sector.
    public static let tearGranularity = 512

    enum Change {
        case write(offset: Int, bytes: [UInt8])
        case zero(offset: Int, length: Int)
        /// A write made with RWF_DSYNC: on the disk when it returned, so a crash keeps all of it.
        case durableWrite(offset: Int, bytes: [UInt8])
    }

    struct Contents {
        var current: [UInt8] = []
        var durable: [UInt8] = []
        var unsynced: [Change] = []
        var failSyncs = false
        /// One-shot faults (`SimulatedStorageFile+Faults.swift`).
        var faults = SimulatedFaults()
        /// Bytes written by writes, zeroing and copies (write amplification measurements).
        var bytesWritten: UInt64 = 0
    }

    public let path: String
    public let writeMode: StorageWriteMode
    let contents: Mutex<Contents>
    /// Run around each `sync()`: before it (may fail it), and after it succeeded. The metadata journal's
    /// file uses them so that a journal append is a metadata commit for the simulated store's hooks.
    let syncHooks = Mutex<(before: @Sendable () throws -> Void, after: @Sendable () -> Void)?>(nil)

    public init(path: String, durable: [UInt8] = [], writeMode: StorageWriteMode = .direct) {
        self.path = path
        self.writeMode = writeMode
        contents = Mutex(Contents(current: durable, durable: durable))
    }

    /// Bytes written to this file so far (data, zeros and copies).
    public var bytesWritten: UInt64 { contents.withLock { $0.bytesWritten } }

    /// Makes every later `sync()` fail with EIO (a dying disk).
    public func failSyncs() { contents.withLock { $0.failSyncs = true } }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {
        contents.withLock { c in
            let start = Int(offset)
            let available = max(0, min(buffer.count, c.current.count - start))
            if available > 0 {
                c.current.withUnsafeBytes { source in
                    buffer.baseAddress!.copyMemory(from: source.baseAddress! + start, byteCount: available)
                }
            }
            if available < buffer.count {
                (buffer.baseAddress! + available).initializeMemory(
                    as: UInt8.self, repeating: 0, count: buffer.count - available)
            }
        }
    }

    /// Memory never waits.
    public func readIfCached(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws -> Bool {
        try read(into: buffer, at: offset)
        return true
    }

    public func write(_ buffer: UnsafeRawBufferPointer, at offset: UInt64) throws {
        let bytes = Array(buffer)
        contents.withLock { c in
            Self.apply(.write(offset: Int(offset), bytes: bytes), to: &c.current)
            c.unsynced.append(.write(offset: Int(offset), bytes: bytes))
            c.bytesWritten += UInt64(bytes.count)
        }
    }

    /// Memory never waits: every write can be immediate (so the engine's immediate path runs under the
    /// same power cuts and faults as the others).
    public func writeIfImmediate(_ buffer: UnsafeRawBufferPointer, at offset: UInt64) throws -> Bool {
        try write(buffer, at: offset)
        return true
    }

    public func writeDurably(_ buffer: UnsafeRawBufferPointer, at offset: UInt64) throws {
        let bytes = Array(buffer)
        try contents.withLock { c in
            try Self.injectDurableWriteFault(&c, bytes: bytes, offset: offset, path: path)
            Self.apply(.write(offset: Int(offset), bytes: bytes), to: &c.current)
            c.bytesWritten += UInt64(bytes.count)
            // Kept in order with the unsynced changes so that replaying an older one cannot undo it.
            c.unsynced.append(.durableWrite(offset: Int(offset), bytes: bytes))
        }
    }

    public func sync() throws {
        let hooks = syncHooks.withLock { $0 }
        try hooks?.before()
        try contents.withLock { c in
            if c.failSyncs { throw IOError(operation: "fdatasync", path: path, errno: 5) }
            try Self.injectSyncFault(&c, path: path)
            // What reached the disk: the unsynced changes, not the cache (after a failed sync the cache
            // holds bytes the disk lost for good).
            for change in c.unsynced { Self.apply(change, to: &c.durable) }
            if c.durable.count > c.current.count { c.durable.removeLast(c.durable.count - c.current.count) }
            if c.durable.count < c.current.count {
                c.durable += [UInt8](repeating: 0, count: c.current.count - c.durable.count)
            }
            c.unsynced = []
        }
        hooks?.after()
    }

    /// Punching keeps the file size, like FALLOC_FL_KEEP_SIZE.
    public func punchHole(at offset: UInt64, length: UInt64) throws {
        contents.withLock { c in
            let change = Change.zero(offset: Int(offset), length: Int(length))
            Self.apply(change, to: &c.current)
            c.unsynced.append(change)
        }
    }

    /// Zeroing extends the file, like a write (FALLOC_FL_ZERO_RANGE without KEEP_SIZE).
    public func zeroRange(at offset: UInt64, length: UInt64) throws {
        let bytes = [UInt8](repeating: 0, count: Int(length))
        try bytes.withUnsafeBytes { try write($0, at: offset) }
    }

    public func copy(from source: any StorageFile, at sourceOffset: UInt64, to offset: UInt64, length: UInt64) throws
        -> CopyMethod
    {
        var bytes = [UInt8](repeating: 0, count: Int(length))
        try bytes.withUnsafeMutableBytes { try source.read(into: $0, at: sourceOffset) }
        try bytes.withUnsafeBytes { try write($0, at: offset) }
        return .userspace
    }

    public func size() throws -> UInt64 { contents.withLock { UInt64($0.current.count) } }

    /// Truncation is a metadata change: durable at the next sync, like a write.
    public func truncate(to length: UInt64) throws {
        contents.withLock { c in
            let count = Int(length)
            if c.current.count > count {
                c.current.removeLast(c.current.count - count)
                c.unsynced.append(.zero(offset: count, length: Int.max / 2))
            } else {
                c.current += [UInt8](repeating: 0, count: count - c.current.count)
            }
        }
    }

    public func allocatedBytes() throws -> UInt64 {
        contents.withLock { UInt64($0.current.count { $0 != 0 }) }
    }

    public func nextData(from offset: UInt64) throws -> UInt64? {
        contents.withLock { c in
            var i = Int(offset)
            while i < c.current.count {
                if c.current[i] != 0 { return UInt64(i) }
                i += 1
            }
            return nil
        }
    }

    /// The bytes a power cut would leave: the synced contents plus a random subset of the unsynced
    /// changes, applied in order, each possibly torn at sector granularity.
    public func crashImage(using random: inout some RandomNumberGenerator) -> [UInt8] {
        contents.withLock { c in
            var image = c.durable
            for change in c.unsynced {
                if case .durableWrite = change {
                    Self.apply(change, to: &image)
                    continue
                }
                switch Int.random(in: 0..<4, using: &random) {
                case 0: continue  // lost
                case 1: Self.apply(Self.torn(change, using: &random), to: &image)
                default: Self.apply(change, to: &image)
                }
            }
            return image
        }
    }

    static func torn(_ change: Change, using random: inout some RandomNumberGenerator) -> Change {
        switch change {
        case .write(let offset, let bytes):
            let sectors = max(1, bytes.count / tearGranularity)
            let kept = Int.random(in: 0...sectors, using: &random) * tearGranularity
            return .write(offset: offset, bytes: Array(bytes.prefix(kept)))
        case .durableWrite:
            return change
        case .zero(let offset, let length):
            let kept = Int.random(in: 0...max(1, length / tearGranularity), using: &random) * tearGranularity
            return .zero(offset: offset, length: min(kept, length))
        }
    }

    static func apply(_ change: Change, to bytes: inout [UInt8]) {
        switch change {
        case .write(let offset, let data), .durableWrite(let offset, let data):
            if bytes.count < offset + data.count { bytes += [UInt8](repeating: 0, count: offset + data.count - bytes.count) }
            bytes.replaceSubrange(offset..<(offset + data.count), with: data)
        case .zero(let offset, let length):
            let end = min(bytes.count, offset + length)
            if end > offset { bytes.replaceSubrange(offset..<end, with: repeatElement(0, count: end - offset)) }
        }
    }
}
