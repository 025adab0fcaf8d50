import CairnIO
import Foundation
import Logging
import Synchronization

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

extension Pool {
    /// Space accounting and capabilities of the pool.
    public func status() -> PoolStatus {
        let fileList = monitor.withLock { Array(files.values) }
        let fileBytes = fileList.reduce(UInt64(0)) { $0 + ((try? $1.allocatedBytes()) ?? 0) }
        return monitor.withLock {
            // Slot files are sparse: a slot costs what its data sub-blocks hold. Count each slot once,
            // with the union of the data its versions keep there.
            var slotData: [SlotAddress: (mask: UInt64, references: Int, subBlock: UInt64)] = [:]
            for volume in state.volumes.values {
                let sub = UInt64(volume.geometry.subBlockSize)
                for list in volume.map.values {
                    for version in list.versions where version.hasSlot {
                        let entry = slotData[version.slot] ?? (0, 0, sub)
                        slotData[version.slot] = (entry.mask | version.dataMask, entry.references + 1, sub)
                    }
                }
            }
            var used: UInt64 = 0
            var shared: UInt64 = 0
            for entry in slotData.values {
                let bytes = UInt64(entry.mask.nonzeroBitCount) * entry.subBlock
                used += bytes
                if entry.references > 1 { shared += bytes }
            }
            var pending: UInt64 = 0
            for (id, allocator) in state.allocators {
                pending += UInt64(allocator.pendingCount) * UInt64(state.slotFileRecords[id]!.chunkSize)
            }
            var status = PoolStatus(
                poolID: poolID, location: media.location, copyMethod: copyMethod, volumeCount: state.volumes.count,
                provisionedBytes: state.volumes.values.reduce(0) { $0 + $1.record.size },
                usedBytes: used, sharedBytes: shared, pendingFreeBytes: pending, fileBytes: fileBytes,
                filesystemAvailableBytes: media.availableBytes(), failure: state.failure?.message,
                bytesWritten: counters.bytesWritten.load(ordering: .relaxed),
                bytesCopied: counters.bytesCopied.load(ordering: .relaxed),
                bytesZeroed: counters.bytesZeroed.load(ordering: .relaxed),
                bytesRead: counters.bytesRead.load(ordering: .relaxed),
                dataWrites: Self.dataWriteMode(files.values.map(\.writeMode)), dataChecksums: options.dataChecksums,
                checksumMismatches: checksumMismatchCount,
                uncheckedDataSinceBeforeChecksums: slotFilesWithUncheckedData.load(ordering: .relaxed) > 0)
            status.immediateWrites = immediateWrites.written.load(ordering: .relaxed)
            status.immediateWritesThrottled = immediateWrites.throttled.load(ordering: .relaxed)
            return status
        }
    }

    /// One word for the slot files' write modes: a refusal anywhere wins, then buffered, then direct.
    static func dataWriteMode(_ modes: [StorageWriteMode]) -> StorageWriteMode {
        if modes.contains(.directRefused) { return .directRefused }
        if modes.isEmpty || modes.contains(.buffered) { return .buffered }
        if modes.contains(.writeThrough) { return .writeThrough }
        return .direct
    }
}
