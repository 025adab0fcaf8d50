import CairnIO

/// A volume as management commands show it.
public struct VolumeInfo: Sendable, Hashable {
    public var id: UInt64
    public var name: String
    /// Virtual size in bytes.
    public var size: UInt64
    public var chunkSize: UInt32
    /// Bytes holding data in this volume's own chunks (sub-blocks with their mask bit set).
    public var allocatedBytes: UInt64
    /// Chunks with at least one version of their own.
    public var mappedChunks: Int
    public var snapshotCount: Int
    /// Sessions attached (NBD connections).
    public var attachments: Int
    public var createdAt: Int64
    /// For a clone: "volume@snapshot" it was cloned from.
    public var origin: String?
    /// Store that preserved data is copied out to (nil: it stays in the pool).
    public var preserveStore: String?
}

/// The pool as `cairn pool status` shows it.
public struct PoolStatus: Sendable, Hashable {
    public var poolID: String
    public var location: String
    public var copyMethod: CopyMethod
    public var volumeCount: Int
    /// Sum of volume sizes (what thin provisioning promised).
    public var provisionedBytes: UInt64
    /// Data held in slots (each slot counted once, whatever shares it), in bytes.
    public var usedBytes: UInt64
    /// Of `usedBytes`, data in slots referenced more than once (dedup, COPY_AND_WRITE sources).
    public var sharedBytes: UInt64
    /// Freed slots waiting for the next commit before they can be reused, in bytes.
    public var pendingFreeBytes: UInt64
    /// Disk space the slot files occupy.
    public var fileBytes: UInt64
    /// Free space left on the filesystem under the pool (nil: unknown).
    public var filesystemAvailableBytes: UInt64?
    /// Set when the pool stopped accepting writes after a durability failure.
    public var failure: String?
    /// Slot file I/O since the pool opened: bytes written for hosts (with sub-block padding), copied by
    /// the engine (copy-on-write edges, COPY_AND_WRITE, copy-out), zeroed, and read.
    public var bytesWritten: UInt64
    public var bytesCopied: UInt64
    public var bytesZeroed: UInt64
    public var bytesRead: UInt64
    /// How data writes reach the disk: direct (O_DIRECT), buffered, or buffered because the filesystem
    /// refused O_DIRECT (the pool's own slot files; the least direct one when they differ).
    public var dataWrites: StorageWriteMode = .buffered
    /// Slot data carries a CRC-32C per 4 KiB, verified on every read (docs/ARCHITECTURE.md, "Data checksums").
    public var dataChecksums = false
    /// Data blocks found not to match their checksums since the pool opened (each read failed with EIO).
    public var checksumMismatches: UInt64 = 0
    /// Host writes done on the caller's thread (`Pool.writeIfImmediate`), and how many of them the kernel
    /// throttled (each closes that path for a second).
    public var immediateWrites: UInt64 = 0
    public var immediateWritesThrottled: UInt64 = 0
    /// Some slot data was written before this pool had checksums: it is read unchecked until rewritten
    /// (`cairn pool scrub` says how much).
    public var uncheckedDataSinceBeforeChecksums = false
}
