import CairnIO
import Glibc
import Logging

/// The metadata store as the pool uses it: an append-only journal in front of the durable store
/// (SQLite). A group commit that only replaces chunk version lists, volume and snapshot records or
/// clone map blocks — every write's commit and a snapshot's cut — is one frame appended to the journal
/// with one write and one `fdatasync`; a checkpoint thread applies the journal to the store in the
/// background, and the journal starts over from its beginning once all of it is in the store.
/// Anything else (deletions, new slot files, clone group records) first applies what the journal
/// holds and then commits to the store directly, in one store transaction.
///
/// Which frames the store already holds is recorded in the store itself (`journalApplied`, in the same
/// transaction as the frames' changes), so a crash at any point of a checkpoint replays exactly the
/// frames the store lacks. Nothing of the journal stays in memory: the checkpoint reads the frames
/// back from the file.
public final class JournaledMetadataStore: MetadataStore, @unchecked Sendable {
    // @unchecked: the mutable fields are only touched with `monitor` held.
    /// Space of the journal file, written once with zeros so that appends overwrite allocated blocks
    /// and `fdatasync` has no file-system metadata to write. Bounds replay at open to reading this much
    /// and one store transaction of at most `capacity / 53` chunk records (the smallest entry).
    public static let defaultCapacity: UInt64 = 32 << 20
    /// Journal bytes not yet in the store above which the checkpoint thread starts: a fraction of the
    /// capacity, so that appends rarely wait for a checkpoint to make room.
    static func checkpointThreshold(capacity: UInt64) -> UInt64 { capacity / 8 }

    private let base: any MetadataStore
    private let file: any StorageFile
    private let capacity: UInt64
    private let logger: Logger
    private let monitor = Monitor()
    /// Serializes commits (appends and direct commits); taken before `monitor`.
    private let commitSerial = Monitor()
    /// Where the next frame goes, and the sequence number it gets.
    private var end: UInt64 = 0
    private var nextSequence: UInt64
    /// Frames before this offset are in the store.
    private var checkpointed: UInt64 = 0
    private var checkpointRunning = false
    /// An append waits for room: checkpoint whatever is there, however little.
    private var roomWanted = false
    private var stopping = false
    private var failure: EngineError?
    private var thread = pthread_t()
    private var threadStarted = false

    /// Opens the journal over `base`: applies to `base` every frame it lacks (recovery after a crash),
    /// then starts the journal over and starts the checkpoint thread.
    init(base: any MetadataStore, journal: any StorageFile, capacity: UInt64 = defaultCapacity, logger: Logger) throws {
        self.base = base
        self.file = journal
        self.capacity = capacity
        self.logger = logger
        let applied = try base.journalApplied()
        let (transaction, last, frames) = try Self.read(journal, from: 0, to: capacity, after: applied)
        if let last {
            var t = transaction
            t.journalApplied = last
            try base.commit(t)
            logger.info("metadata journal replayed", metadata: ["frames": "\(frames)", "last": "\(last)"])
        }
        nextSequence = max(applied, last ?? 0) + 1
        try preallocate()
        let box = Unmanaged.passRetained(self)
        let rc = pthread_create(&thread, nil, { raw in
            let store = Unmanaged<JournaledMetadataStore>.fromOpaque(raw!).takeRetainedValue()
            setCurrentThreadName("cairn-checkpoint")
            store.runCheckpoints()
            return nil
        }, box.toOpaque())
        precondition(rc == 0, "pthread_create failed: \(rc)")
        threadStarted = true
    }

    /// Writes the whole capacity once with zeros (real writes: fallocate would leave unwritten extents
    /// whose conversion is a file-system journal commit at every append's fdatasync), so later appends
    /// overwrite written blocks and their fdatasync writes data only.
    private func preallocate() throws {
        do {
            let size = try file.size()
            guard size < capacity else { return }
            let zeros = [UInt8](repeating: 0, count: 1 << 20)
            var offset = size
            while offset < capacity {
                let n = Int(min(UInt64(zeros.count), capacity - offset))
                try zeros.withUnsafeBytes { try file.write(UnsafeRawBufferPointer(rebasing: $0[0..<n]), at: offset) }
                offset += UInt64(n)
            }
            try file.sync()
        } catch {
            throw EngineError.io("preparing the metadata journal \(file.path)", error)
        }
    }

    public func journalApplied() throws -> UInt64 { try base.journalApplied() }

    /// The store's view with every journal frame applied (pool check compares memory against it).
    public func load(mappings visit: (MappingRow) throws -> Void) throws -> PoolCatalog {
        try commitSerial.withLock { try checkpointNow(with: nil) }
        return try base.load(mappings: visit)
    }

    public func commit(_ transaction: MetadataTransaction) throws {
        guard !transaction.isEmpty else { return }
        try commitSerial.withLock {
            if let failure = monitor.withLock({ failure }) { throw failure }
            if let payload = MetadataJournalFormat.encodePayload(transaction),
                try append(payload)
            {
                return
            }
            try checkpointNow(with: transaction)
        }
    }

    /// Appends one frame and makes it durable. False when it does not fit even after waiting for the
    /// checkpoint: the caller then commits to the store directly.
    private func append(_ payload: [UInt8]) throws -> Bool {
        let size = UInt64(MetadataJournalFormat.headerSize + payload.count)
        guard size <= capacity else { return false }
        let offset = monitor.withLock { () -> UInt64? in
            // Start over when everything written is in the store (and no checkpoint is reading it).
            if checkpointed == end && !checkpointRunning {
                end = 0
                checkpointed = 0
            }
            while end + size > capacity && (checkpointRunning || checkpointed < end) && failure == nil {
                roomWanted = true
                monitor.broadcast()
                monitor.wait()
                if checkpointed == end && !checkpointRunning {
                    end = 0
                    checkpointed = 0
                }
            }
            return end + size <= capacity ? end : nil
        }
        if let failure = monitor.withLock({ failure }) { throw failure }
        guard let offset else { return false }
        let sequence = nextSequence
        let frame = MetadataJournalFormat.frame(sequence: sequence, payload: payload)
        do {
            try frame.withUnsafeBytes { try file.write($0, at: offset) }
            try file.sync()
        } catch {
            throw EngineError.io("appending to the metadata journal \(file.path)", error)
        }
        nextSequence += 1
        monitor.withLock {
            end = offset + size
            if end - checkpointed >= Self.checkpointThreshold(capacity: capacity) { monitor.broadcast() }
        }
        return true
    }

    /// Applies every frame not yet in the store, plus `transaction`, in one store transaction; the
    /// journal then starts over (caller holds `commitSerial`).
    private func checkpointNow(with transaction: MetadataTransaction?) throws {
        // Counts as the running checkpoint: the checkpoint thread must not apply the same frames and
        // then set `checkpointed` past the `end` this resets (it did, and the next check underflowed).
        let (from, to) = monitor.withLock { () -> (UInt64, UInt64) in
            while checkpointRunning { monitor.wait() }
            checkpointRunning = true
            return (checkpointed, end)
        }
        do {
            var t = try Self.read(file, from: from, to: to, after: 0).transaction
            if let transaction { Self.merge(transaction, into: &t) }
            t.journalApplied = nextSequence - 1
            try base.commit(t)
        } catch {
            monitor.withLock { checkpointRunning = false }
            monitor.broadcast()
            throw error
        }
        monitor.withLock {
            end = 0
            checkpointed = 0
            checkpointRunning = false
        }
        monitor.broadcast()
    }

    /// `later` applied after `t`, as one transaction. Only a journal-only `t` is merged into, so the
    /// order of the kinds of change inside `MetadataTransaction.apply` keeps the meaning.
    private static func merge(_ later: MetadataTransaction, into t: inout MetadataTransaction) {
        // Deletions in `later` must not be undone by upserts of `t`: drop those upserts.
        let deleted = Set(later.deleteVolumes)
        t.upsertVolumes.removeAll { deleted.contains($0.id) }
        t.upsertSnapshots.removeAll { s in
            deleted.contains(s.volumeID)
                || later.deleteSnapshots.contains { $0.volumeID == s.volumeID && $0.name == s.name }
        }
        t.chunks.removeAll { deleted.contains($0.volumeID) }
        let deletedGroups = Set(later.deleteCloneGroups)
        t.cloneMapBlocks.removeAll { deletedGroups.contains($0.sourceID) }
        t.upsertStores += later.upsertStores
        t.upsertSlotFiles += later.upsertSlotFiles
        t.deleteVolumes += later.deleteVolumes
        t.upsertVolumes.removeAll { v in later.upsertVolumes.contains { $0.id == v.id } }
        t.upsertVolumes += later.upsertVolumes
        t.deleteSnapshots += later.deleteSnapshots
        t.upsertSnapshots += later.upsertSnapshots
        t.chunks += later.chunks
        t.deleteCloneGroups += later.deleteCloneGroups
        t.upsertCloneGroups += later.upsertCloneGroups
        t.cloneMapBlocks += later.cloneMapBlocks
    }

    /// The valid frames in `[from, to)` with a sequence number above `after`, merged into one
    /// transaction (a chunk's last list wins), the last sequence number seen, and the frame count.
    private static func read(_ file: any StorageFile, from: UInt64, to: UInt64, after: UInt64) throws
        -> (transaction: MetadataTransaction, last: UInt64?, frames: Int)
    {
        var t = MetadataTransaction()
        guard to > from else { return (t, nil, 0) }
        var bytes = [UInt8](repeating: 0, count: Int(to - from))
        do {
            try bytes.withUnsafeMutableBytes { try file.read(into: $0, at: from) }
        } catch {
            throw EngineError.io("reading the metadata journal \(file.path)", error)
        }
        var position = 0
        var previous: UInt64?
        var last: UInt64?
        var frames = 0
        while let header = MetadataJournalFormat.header(bytes[position...]) {
            let start = position + MetadataJournalFormat.headerSize
            guard header.length <= bytes.count - start, previous.map({ header.sequence == $0 + 1 }) ?? true else { break }
            let payload = bytes[start..<(start + header.length)]
            guard MetadataJournalFormat.checksum(sequence: header.sequence, payload: Array(payload)) == header.crc
            else { break }
            if header.sequence > after {
                try MetadataJournalFormat.decodePayload(payload, into: &t)
                last = header.sequence
                frames += 1
            }
            previous = header.sequence
            position = start + header.length
        }
        // One record per chunk: the newest list replaces the older ones anyway.
        var newest: [ChunkKey: Int] = [:]
        for (index, entry) in t.chunks.enumerated() { newest[ChunkKey(volume: entry.volumeID, chunk: entry.chunk)] = index }
        if newest.count < t.chunks.count {
            t.chunks = newest.values.sorted().map { t.chunks[$0] }
        }
        return (t, last, frames)
    }

    private struct ChunkKey: Hashable {
        var volume: UInt64
        var chunk: UInt64
    }

    /// The checkpoint thread: applies the journal to the store whenever enough of it is waiting (or an
    /// append waits for room), without holding up appends meanwhile.
    private func runCheckpoints() {
        while true {
            let range = monitor.withLock { () -> (from: UInt64, to: UInt64, last: UInt64)? in
                while !stopping && failure == nil
                    && (checkpointRunning || (!roomWanted && end - checkpointed < Self.checkpointThreshold(capacity: capacity)))
                {
                    monitor.wait()
                }
                if stopping || failure != nil { return nil }
                roomWanted = false
                guard end > checkpointed else { return (checkpointed, checkpointed, 0) }
                checkpointRunning = true
                return (checkpointed, end, nextSequence - 1)
            }
            guard let range else { return }
            guard range.to > range.from else {
                monitor.broadcast()
                continue
            }
            do {
                var t = try Self.read(file, from: range.from, to: range.to, after: 0).transaction
                t.journalApplied = range.last
                try base.commit(t)
                monitor.withLock {
                    checkpointed = range.to
                    checkpointRunning = false
                }
            } catch {
                logger.critical("metadata journal checkpoint failed", metadata: ["error": "\(error)"])
                monitor.withLock {
                    failure = EngineError(.ioFailure, "the metadata journal could not be checkpointed", cause: error)
                    checkpointRunning = false
                }
            }
            monitor.broadcast()
        }
    }

    public func integrityCheck() throws -> [String] { try base.integrityCheck() }

    /// Stops the checkpoint thread; applies the journal to the store when it still can, so a cleanly
    /// closed pool's store holds everything.
    public func close() {
        stopThread()
        if monitor.withLock({ failure == nil }) {
            do {
                try commitSerial.withLock { try checkpointNow(with: nil) }
            } catch {
                logger.error("final metadata journal checkpoint failed", metadata: ["error": "\(error)"])
            }
        }
        base.close()
    }

    /// Stops the checkpoint thread without applying anything (a simulated process death).
    func abandon() {
        stopThread()
        base.close()
    }

    private func stopThread() {
        let running = monitor.withLock {
            defer { stopping = true }
            return threadStarted && !stopping
        }
        guard running else { return }
        monitor.broadcast()
        pthread_join(thread, nil)
    }
}
