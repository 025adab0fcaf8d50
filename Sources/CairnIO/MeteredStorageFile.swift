import Synchronization

/// Byte counters for the I/O a pool does to its slot files: what the host wrote, what the engine
/// copied on its behalf (copy-on-write edges, COPY_AND_WRITE, copy-out, dedup repair), what it zeroed,
/// and what it read. Write amplification is (written + copied + zeroed) / host bytes.
public final class IOCounters: Sendable {
    public let bytesWritten = Atomic<UInt64>(0)
    public let bytesCopied = Atomic<UInt64>(0)
    public let bytesZeroed = Atomic<UInt64>(0)
    public let bytesRead = Atomic<UInt64>(0)

    public init() {}
}

/// A `StorageFile` that counts the bytes going through it into shared `IOCounters`.
public final class MeteredStorageFile: StorageFile {
    public let base: any StorageFile
    let counters: IOCounters

    public init(_ base: any StorageFile, counters: IOCounters) {
        self.base = base
        self.counters = counters
    }

    public var path: String { base.path }
    public var writeMode: StorageWriteMode { base.writeMode }

    public func preallocate(at offset: UInt64, length: UInt64) throws {
        try base.preallocate(at: offset, length: length)
    }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {
        try base.read(into: buffer, at: offset)
        counters.bytesRead.add(UInt64(buffer.count), ordering: .relaxed)
    }

    public func readIfCached(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws -> Bool {
        let done = try base.readIfCached(into: buffer, at: offset)
        if done { counters.bytesRead.add(UInt64(buffer.count), ordering: .relaxed) }
        return done
    }

    public func write(_ buffer: UnsafeRawBufferPointer, at offset: UInt64) throws {
        try base.write(buffer, at: offset)
        counters.bytesWritten.add(UInt64(buffer.count), ordering: .relaxed)
    }

    public func writeIfImmediate(_ buffer: UnsafeRawBufferPointer, at offset: UInt64) throws -> Bool {
        let done = try base.writeIfImmediate(buffer, at: offset)
        if done { counters.bytesWritten.add(UInt64(buffer.count), ordering: .relaxed) }
        return done
    }

    public func writeDurably(_ buffer: UnsafeRawBufferPointer, at offset: UInt64) throws {
        try base.writeDurably(buffer, at: offset)
        counters.bytesWritten.add(UInt64(buffer.count), ordering: .relaxed)
    }

    public func sync() throws { try base.sync() }

    public func punchHole(at offset: UInt64, length: UInt64) throws { try base.punchHole(at: offset, length: length) }

    public func zeroRange(at offset: UInt64, length: UInt64) throws {
        try base.zeroRange(at: offset, length: length)
        counters.bytesZeroed.add(length, ordering: .relaxed)
    }

    /// Unwraps the source so the base file can still use reflink or copy_file_range between real files.
    @discardableResult
    public func copy(from source: any StorageFile, at sourceOffset: UInt64, to offset: UInt64, length: UInt64) throws
        -> CopyMethod
    {
        let inner = (source as? MeteredStorageFile)?.base ?? source
        let method = try base.copy(from: inner, at: sourceOffset, to: offset, length: length)
        counters.bytesCopied.add(length, ordering: .relaxed)
        return method
    }

    public func size() throws -> UInt64 { try base.size() }
    public func truncate(to length: UInt64) throws { try base.truncate(to: length) }
    public func allocatedBytes() throws -> UInt64 { try base.allocatedBytes() }
    public func nextData(from offset: UInt64) throws -> UInt64? { try base.nextData(from: offset) }
    public func prefetch(at offset: UInt64, length: UInt64) { base.prefetch(at: offset, length: length) }
}
