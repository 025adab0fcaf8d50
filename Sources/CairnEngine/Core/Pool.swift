import CairnIO
import Foundation
import Logging
import Synchronization

/// Tunables of a pool. Defaults are what the daemon uses.
public struct PoolOptions: Sendable {
    /// How a pool in a directory writes its slot files (`cairn serve --data-writes`). Buffered stays the
    /// default until direct writes measure better on a quiet machine: direct writes evict the pages they
    /// overwrite, so reads of fresh data leave the page cache for the disk, and with 4 I/O threads only 4
    /// writes are in flight (docs/BENCHMARKS.md, 2026-12-07).
    public var dataWrites: StorageWriteMode = .buffered
    /// Longest time a metadata change waits for a commit when nobody sends FLUSH. dm-thin commits
    /// every second by default; so do we.
    public var commitIntervalNanoseconds: UInt64 = 1_000_000_000
    /// Space kept free on the filesystem for metadata and the WAL; chunk allocations fail with ENOSPC
    /// below it rather than letting a metadata commit fail.
    public var reservedBytes: UInt64 = 64 << 20
    public var logger = Logger(label: "cairn.engine")
    /// Run clone-group jobs (sync, reverse sync, protected restore) on their own threads, and resume the
    /// interrupted ones at open. Tests turn this off to drive the jobs step by step.
    public var runCloneJobsInBackground = true
    /// Pause between two extents a clone job copies: a sync rate limit (0: as fast as the disk goes).
    public var cloneExtentDelayNanoseconds: UInt64 = 0
    /// Size of the metadata journal (docs/ARCHITECTURE.md, "The pool on disk"): bounds its replay at
    /// open. Tests make it small so that checkpoints and wrap-arounds happen often.
    public var journalCapacity: UInt64 = JournaledMetadataStore.defaultCapacity
    /// Keep a CRC-32C per 4 KiB of slot data and verify every read (docs/ARCHITECTURE.md, "Data
    /// checksums"). Off only to measure what checksums cost.
    public var dataChecksums = true
    /// Longest time between two group commits that sync the checksum files (and may clear write-intent
    /// marks). A commit in between syncs only data and metadata: the regions written since stay marked,
    /// so a crash recomputes their checksums, and a FLUSH pays one `fdatasync` less (measured: 4 KiB
    /// random writes with a FLUSH every 32 ran at 0.49x of no checksums when every commit synced them).
    public var checksumSyncIntervalNanoseconds: UInt64 = 1_000_000_000
    /// An immediate write (`Pool.writeIfImmediate`) that took longer than this was held up by the kernel,
    /// and closes the immediate path for a while (`ImmediateWriteGate`). Wall time: tests whose threads a
    /// loaded machine preempts raise it, so that what they check does not depend on the scheduler.
    public var immediateWriteStallLimit: Duration = ImmediateWriteGate.defaultStallLimit

    public init() {}
}

/// A storage pool: thin volumes whose chunks live in slot files and whose maps live in memory, made
/// durable by group commits to a metadata store. See docs/ARCHITECTURE.md.
///
/// Thread safety: every method may be called from any thread. Data-path methods block on file I/O;
/// call them from the I/O executor, never from an event loop.
public final class Pool: @unchecked Sendable {
    // @unchecked: `state` and `files` are only touched with `monitor` held; the other stored
    // properties are immutable after init.
    let monitor = Monitor()
    /// Held around each metadata transaction and the map bookkeeping on either side of it, by full
    /// commits (not while they sync data) and by write-intent commits, so that a protected restore map
    /// block's stored words only ever grow during a restore. Taken before `monitor`, never inside it.
    let mapCommitSerial = Monitor()
    var state = PoolState()
    var files: [UInt16: any StorageFile] = [:]

    public let media: any PoolMedia
    let metadata: JournaledMetadataStore
    public let poolID: String
    /// How breaking sharing copies data on these media (reflink, copy_file_range, userspace).
    public let copyMethod: CopyMethod
    let options: PoolOptions
    var logger: Logger { options.logger }
    /// Background jobs (reclaim after snapshot deletion, dedup, scrub) and their progress.
    public let jobs: JobRegistry
    /// Bytes written, copied, zeroed and read in slot files since the pool opened.
    public let counters = IOCounters()
    /// Checksum mismatches found since the pool opened.
    let checksumCounters = ChecksumCounters()
    /// Slot files that held data when their checksum file was created (a pool from before checksums).
    let slotFilesWithUncheckedData = Atomic<Int>(0)
    /// When a group commit last synced the checksum files (commit thread, or `close`).
    let lastChecksumSync = Mutex<ContinuousClock.Instant?>(nil)
    /// Closes the immediate write path for a while after the kernel throttled one (`Pool+ImmediateWrite`).
    let immediateWrites: ImmediateWriteGate
    private var committer: GroupCommitter!

    // The services around the core (docs/ARCHITECTURE.md, "Inside the engine"). Each holds the pool
    // unowned; `init` makes them all before the pool is shared, so none is ever made lazily on two threads.
    /// Volumes: create, delete, resize, rename, clone, list, attach.
    public private(set) lazy var volumes = VolumeCatalog(pool: self)
    /// Snapshots: create, delete, rollback, list, changed ranges, block status.
    public private(set) lazy var snapshots = SnapshotCatalog(pool: self)
    /// Preserve stores and the copy-out before a write overwrites preserved data.
    public private(set) lazy var stores = StoreCatalog(pool: self)
    /// Giving back space no reader needs after a snapshot deletion (a job).
    public private(set) lazy var reclaim = Reclaimer(pool: self)
    /// Sharing one slot between versions with identical data (a job).
    public private(set) lazy var dedup = Deduplicator(pool: self)
    /// Verifying slot data against its checksums (a job).
    public private(set) lazy var scrub = Scrubber(pool: self)
    /// `cairn pool check`.
    public private(set) lazy var checker = PoolChecker(pool: self)
    /// Clone groups: members, delta and restore maps, COD, jobs (`CloneGroups/`).
    public private(set) lazy var cloneGroups = CloneGroups(pool: self)

    /// Opens the pool in `directory`, creating it when absent.
    public static func open(directory: String, options: PoolOptions = PoolOptions()) throws -> Pool {
        try Pool(media: DirectoryMedia(directory: directory, dataWrites: options.dataWrites), options: options)
    }

    /// Opens a pool on `media`: loads the committed metadata and rebuilds maps, reference counts and
    /// free lists. No repair step exists or is needed after a crash (docs/ARCHITECTURE.md).
    public init(media: any PoolMedia, options: PoolOptions = PoolOptions()) throws {
        self.media = media
        self.options = options
        self.jobs = JobRegistry(logger: options.logger)
        self.immediateWrites = ImmediateWriteGate(stallLimit: options.immediateWriteStallLimit)
        self.metadata = try JournaledMetadataStore(
            base: media.openMetadataStore(), journal: media.openMetadataJournal(), capacity: options.journalCapacity,
            logger: options.logger)
        self.copyMethod = media.probeCopyMethod()
        var loaded = PoolState()
        var slotFilesByChunkSize: [UInt32: UInt16] = [:]
        let catalog: PoolCatalog
        do {
            var volumesByID: [UInt64: VolumeState] = [:]
            var pendingRows: [MappingRow] = []
            catalog = try metadata.load { row in pendingRows.append(row) }
            for store in catalog.stores { loaded.stores[store.name] = store }
            for file in catalog.slotFiles {
                loaded.slotFileRecords[file.id] = file
                loaded.allocators[file.id] = SlotAllocator(fileID: file.id, chunkSize: file.chunkSize)
                if file.store == nil { slotFilesByChunkSize[file.chunkSize] = file.id }
            }
            for record in catalog.volumes {
                let geometry = try ChunkGeometry(chunkSize: record.chunkSize)
                guard let fileID = slotFilesByChunkSize[record.chunkSize] else {
                    throw EngineError(.corrupt, "volume '\(record.name)' has no slot file for its chunk size")
                }
                volumesByID[record.id] = VolumeState(record: record, geometry: geometry, slotFile: fileID)
                loaded.volumeIDs[record.name] = record.id
                loaded.nextVolumeID = max(loaded.nextVolumeID, record.id + 1)
            }
            for snapshot in catalog.snapshots {
                volumesByID[snapshot.volumeID]?.snapshots.append(snapshot)
            }
            try Self.loadMappings(pendingRows, into: &volumesByID, allocators: &loaded.allocators)
            for id in loaded.allocators.keys { loaded.allocators[id]!.finishLoading() }
            loaded.volumes = volumesByID
            try CloneGroups.load(catalog, volumes: volumesByID, into: &loaded.cloneGroups)
        }
        self.poolID = catalog.poolID
        self.state = loaded
        _ = (volumes, snapshots, stores, reclaim, dedup, scrub, checker, cloneGroups)
        if loaded.volumes.values.contains(where: { $0.record.preserveStore != nil }) { stores.noteInUse() }
        if !loaded.cloneGroups.groups.isEmpty { cloneGroups.inUse.store(true, ordering: .relaxed) }
        for (id, record) in loaded.slotFileRecords {
            let storePath = record.store.flatMap { loaded.stores[$0]?.path }
            let file = MeteredStorageFile(
                try checksummed(
                    media.openSlotFile(named: record.name, in: storePath), slotFile: record.name, in: storePath),
                counters: counters)
            // Slots past the high-water mark were written after the last commit before a crash: nothing
            // maps them, so give their space back now rather than leak it until reuse.
            let end = loaded.allocators[id]!.highWater * UInt64(record.chunkSize)
            if try file.size() > end { try file.truncate(to: end) }
            files[id] = file
        }
        // Weak: a pool dropped without `close()` (a test that failed half-way) must not be read by a timer
        // commit after it is gone; its commit thread then has nothing left to do.
        committer = GroupCommitter(intervalNanoseconds: options.commitIntervalNanoseconds) { [weak self] requested in
            self?.commitOnce(requested: requested)
        }
        cloneGroups.resumeJobs()
        logger.info(
            "pool opened",
            metadata: [
                "pool": "\(media.location)", "volumes": "\(loaded.volumes.count)", "copy": "\(copyMethod.rawValue)",
            ])
    }

    private static func loadMappings(
        _ rows: [MappingRow], into volumes: inout [UInt64: VolumeState], allocators: inout [UInt16: SlotAllocator]
    ) throws {
        var index = 0
        while index < rows.count {
            let first = rows[index]
            var versions: [ChunkVersion] = []
            while index < rows.count && rows[index].volumeID == first.volumeID && rows[index].chunk == first.chunk {
                versions.append(rows[index].version)
                index += 1
            }
            guard volumes[first.volumeID] != nil else {
                throw EngineError(.corrupt, "mapping for unknown volume \(first.volumeID)")
            }
            for version in versions where version.hasSlot {
                guard allocators[version.slot.file] != nil else {
                    throw EngineError(.corrupt, "mapping points at unknown slot file \(version.slot.file)")
                }
                allocators[version.slot.file]!.retain(version.slot.index)
            }
            volumes[first.volumeID]!.setVersions(first.chunk, VersionList(versions))
        }
    }

    /// Commits everything, stops the commit thread and closes the metadata store. Further calls fail
    /// with `.closed`.
    public func close() {
        let alreadyClosed = monitor.withLock {
            defer { state.closed = true }
            return state.closed
        }
        guard !alreadyClosed else { return }
        committer.stop()
        commitOnce()
        closeChecksums()
        metadata.close()
        logger.info("pool closed", metadata: ["pool": "\(media.location)"])
    }

    /// Stops the commit thread without committing anything, as if the process had been killed: what
    /// the media hold is all a reopen will see. Tests use this to simulate crashes.
    @_spi(Testing)
    public func simulateProcessDeath() {
        monitor.withLock { state.closed = true }
        committer.stop()
        metadata.abandon()
    }

    /// The versions of one chunk, oldest first (tests and debugging).
    @_spi(Testing)
    public func versions(volume name: String, chunk: UInt64) -> [ChunkVersion] {
        monitor.withLock { (try? state.volume(named: name))?.map[chunk]?.versions ?? [] }
    }

    /// Reference count of a slot (tests and debugging).
    @_spi(Testing)
    public func refcount(of slot: SlotAddress) -> UInt32 { monitor.withLock { state.refcount(slot) } }

    /// Makes every write that completed before this call durable (NBD FLUSH). Pool-wide, so a FLUSH on
    /// one connection covers writes completed on all of them.
    public func flush() throws {
        try monitor.withLock { try checkWritable() }
        committer.commitAndWait()
        try monitor.withLock {
            if let failure = state.failure { throw failure }
        }
    }

    /// `flush()` without blocking the caller: `completion` runs on the commit thread with nil once every
    /// write completed before this call is durable, or with the error that stopped the pool.
    public func flush(completion: @escaping @Sendable ((any Error)?) -> Void) {
        if let error = monitor.withLock({ () -> (any Error)? in
            do { try checkWritable() } catch { return error }
            return nil
        }) {
            return completion(error)
        }
        committer.commit { [self] in
            completion(monitor.withLock { state.failure ?? (state.closed ? EngineError(.closed, "the pool is closed") : nil) })
        }
    }

    /// Throws when the pool can no longer accept writes. Call with the monitor held.
    func checkWritable() throws {
        if let failure = state.failure { throw failure }
        if state.closed { throw EngineError(.closed, "the pool is closed") }
    }

    static func now() -> Int64 { Int64(Date().timeIntervalSince1970 * 1000) }
}
