import CairnIO
import Glibc
import Synchronization

/// One-shot I/O faults with Linux's report-once semantics: a failed writeback is reported to one
/// fsync/fdatasync, the pages are then marked clean (reads still return the new bytes from the page
/// cache) and the next sync succeeds although the disk never got them (PostgreSQL's "fsyncgate").
struct SimulatedFaults {
    /// Syncs still to fail.
    var syncs = 0
    /// RWF_DSYNC writes still to fail.
    var durableWrites = 0
}

extension SimulatedStorageFile {
    /// Makes the next `count` syncs fail with EIO, each dropping the unsynced changes from the "disk".
    public func failNextSyncs(_ count: Int = 1) { contents.withLock { $0.faults.syncs += count } }

    /// Makes the next `count` durable (RWF_DSYNC) writes fail with EIO: the bytes reach the page cache
    /// but never the disk.
    public func failNextDurableWrites(_ count: Int = 1) { contents.withLock { $0.faults.durableWrites += count } }

    /// True when the disk image (what a power cut keeps at the least) differs from what reads return.
    public var hasLostWrites: Bool {
        contents.withLock { c in c.unsynced.isEmpty && c.durable != c.current }
    }

    static func injectSyncFault(_ c: inout Contents, path: String) throws {
        guard c.faults.syncs > 0 else { return }
        c.faults.syncs -= 1
        // Writeback failed: the changes stay visible but will never be on the disk.
        c.unsynced = []
        throw IOError(operation: "fdatasync", path: path, errno: EIO)
    }

    static func injectDurableWriteFault(_ c: inout Contents, bytes: [UInt8], offset: UInt64, path: String) throws {
        guard c.faults.durableWrites > 0 else { return }
        c.faults.durableWrites -= 1
        // In the page cache, never on the disk; nothing earlier is lost.
        apply(.write(offset: Int(offset), bytes: bytes), to: &c.current)
        throw IOError(operation: "pwritev2(RWF_DSYNC)", path: path, errno: EIO)
    }
}
