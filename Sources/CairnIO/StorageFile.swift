/// How `StorageFile.copy` moved the bytes, fastest first. Shown in `cairn pool status`.
public enum CopyMethod: String, Sendable, Codable, CaseIterable {
    /// FICLONERANGE: the destination shares the source's blocks (XFS with reflink, btrfs). No data I/O.
    case reflink
    /// copy_file_range: the kernel copies (or offloads) without the data entering user space.
    case copyFileRange = "copy_file_range"
    /// pread + pwrite through a buffer.
    case userspace
}

/// How a file's data writes reach the disk. Shown in `cairn pool status`.
public enum StorageWriteMode: String, Sendable, Codable {
    /// Whole-block writes bypass the page cache (O_DIRECT): a FLUSH has only the disk cache to flush.
    case direct
    /// Every write goes through the page cache; FLUSH writes it back.
    case buffered
    /// Through the page cache (reads stay cached), with writeback started as soon as each write returns
    /// (sync_file_range), so a FLUSH mostly waits for writeback already under way.
    case writeThrough = "write-through"
    /// Direct I/O was wanted but the filesystem refused it (tmpfs): latched to the page cache path.
    case directRefused = "buffered (O_DIRECT refused)"
}

/// A random-access file of the chunk store. The engine talks to slot files only through this
/// protocol, so tests can substitute a fault-injecting implementation that loses unsynced writes.
///
/// All methods are thread-safe (positional I/O, no shared file offset) and blocking, so they run on the
/// I/O executor, never on an event loop; the exceptions are `readIfCached` and `writeIfImmediate`, which
/// give up rather than wait for the disk, and `prefetch`, which only starts reads.
public protocol StorageFile: AnyObject, Sendable {
    /// Where the file lives (for messages).
    var path: String { get }

    /// Fills `buffer` with the bytes at `offset`; bytes past the end of the file read as zeros.
    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws
    /// Fills `buffer` only if every byte can be had without waiting for the disk (the page cache holds it);
    /// returns false otherwise, having possibly filled part of it. Never blocks on I/O, so it may run where
    /// blocking is forbidden (an event loop).
    func readIfCached(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws -> Bool
    /// Writes all of `buffer` at `offset` (extending the file if needed). Not durable until `sync()`.
    func write(_ buffer: UnsafeRawBufferPointer, at offset: UInt64) throws
    /// Writes all of `buffer` at `offset` only if that needs no wait for the disk or for another thread
    /// doing I/O: a page-cache write, every lock free, everything it updates already in memory. Returns
    /// false having written nothing otherwise. The one wait left is the kernel's own: a writer past the
    /// dirty-page limits sleeps in the write (Linux has no non-blocking buffered write on ext4), which
    /// callers on an event loop watch for. Not durable until `sync()`, like `write`.
    func writeIfImmediate(_ buffer: UnsafeRawBufferPointer, at offset: UInt64) throws -> Bool
    /// Writes all of `buffer` at `offset` and makes that data durable before returning (RWF_DSYNC).
    func writeDurably(_ buffer: UnsafeRawBufferPointer, at offset: UInt64) throws
    /// fdatasync: every write that completed before this call is durable when it returns.
    func sync() throws
    /// Allocates the range (fallocate mode 0) so later writes into it need no block allocation; where
    /// the filesystem cannot, does nothing. Never changes what the range reads as.
    func preallocate(at offset: UInt64, length: UInt64) throws
    /// Where data writes go (page cache or directly to the disk).
    var writeMode: StorageWriteMode { get }
    /// Deallocates the range; it then reads as zeros. Never changes the file size. Not durable until
    /// `sync()`.
    func punchHole(at offset: UInt64, length: UInt64) throws
    /// Makes the range read as zeros while keeping it allocated, extending the file if needed (like a
    /// write). Not durable until `sync()`.
    func zeroRange(at offset: UInt64, length: UInt64) throws
    /// Copies `length` bytes from `source` at `sourceOffset` to this file at `offset`, with the fastest
    /// method both files allow. Not durable until `sync()`.
    @discardableResult
    func copy(from source: any StorageFile, at sourceOffset: UInt64, to offset: UInt64, length: UInt64) throws
        -> CopyMethod
    /// Starts reading the range into the page cache and returns at once (a hint for a reader that knows
    /// what it reads next, such as a scrub); never an error.
    func prefetch(at offset: UInt64, length: UInt64)
    /// Current length of the file in bytes.
    func size() throws -> UInt64
    /// Sets the length of the file (dropping or adding zeros at the end).
    func truncate(to length: UInt64) throws
    /// Bytes of disk space the file occupies.
    func allocatedBytes() throws -> UInt64
    /// The first offset at or after `offset` that holds data, or nil if there is none (SEEK_DATA).
    func nextData(from offset: UInt64) throws -> UInt64?
}

extension StorageFile {
    /// Files without a direct path write through the page cache.
    public var writeMode: StorageWriteMode { .buffered }
    /// Files whose writes may wait (a network object store, direct I/O) never write immediately.
    public func writeIfImmediate(_ buffer: UnsafeRawBufferPointer, at offset: UInt64) throws -> Bool { false }
    /// Files without a page cache of their own do nothing.
    public func prefetch(at offset: UInt64, length: UInt64) {}
    /// Files that cannot preallocate do nothing: preallocation is only an optimization.
    public func preallocate(at offset: UInt64, length: UInt64) throws {}
}
