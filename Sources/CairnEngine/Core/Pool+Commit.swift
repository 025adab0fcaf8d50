import CairnIO
import Logging
import Synchronization

extension Duration {
    /// Whole milliseconds, for logs.
    var milliseconds: Int64 { components.seconds * 1000 + components.attoseconds / 1_000_000_000_000_000 }
    /// Whole microseconds, for logs and the API.
    public var microseconds: Int64 { components.seconds * 1_000_000 + components.attoseconds / 1_000_000_000_000 }
}

extension Pool {
    /// What one commit captured from the dirty state.
    private struct CommitCapture {
        var transaction = MetadataTransaction()
        var frees: [SlotAddress] = []
        var files: [UInt16: any StorageFile] = [:]
        var chunkSizes: [UInt16: UInt32] = [:]
        /// Indices in `transaction.cloneMapBlocks` of protected restore map blocks captured while their
        /// restore ran: write-intent commits may have stored more bits since, which these must keep.
        var restoreBlocks: [Int] = []
    }

    /// One group commit: capture the dirty metadata, fdatasync the slot files and their checksum files,
    /// commit the metadata, then let freed slots be reused. Runs on the commit thread (or in `close`),
    /// never concurrently.
    ///
    /// The order is the durability rule of docs/ARCHITECTURE.md: every version in the transaction was
    /// installed after its data write completed, so syncing the files *after* the capture makes all the
    /// data the transaction references durable before the transaction is.
    ///
    /// A timer commit (`requested == false`) with no metadata to write does nothing: syncing data that no
    /// metadata depends on is the job of FLUSH, and doing it every second anyway would put pages under
    /// writeback exactly while the host overwrites them (ext4 then stalls those writes).
    func commitOnce(requested: Bool = true) {
        guard var capture = captureDirtyState(requested: requested) else { return }
        let started = ContinuousClock.now
        var synced = started
        // Chosen before the syncs: only marks of regions idle since the last such commit began may be
        // cleared. Most commits leave the checksums to a later one (`checksumSyncIntervalNanoseconds`).
        let intents = checksumSyncDue(timer: !requested, now: started) ? beginChecksumCommit(capture.files) : []
        do {
            for file in capture.files.values { try file.sync() }
            try syncChecksums(intents)
            synced = ContinuousClock.now
            try mapCommitSerial.withLock {
                keepRestoreIntent(in: &capture)
                keepNewerEpochs(in: &capture.transaction)
                try metadata.commit(capture.transaction)
                monitor.withLock { cloneGroups.committed() }
            }
            try finishChecksumCommit(intents)
            let finished = ContinuousClock.now
            logger.debug(
                "commit",
                metadata: [
                    "chunks": "\(capture.transaction.chunks.count)", "frees": "\(capture.frees.count)",
                    "sync_ms": "\((synced - started).milliseconds)", "metadata_ms": "\((finished - synced).milliseconds)",
                    "requested": "\(requested)",
                ])
        } catch {
            failStop(file: media.location, call: "group commit", error: error)
            return
        }
        // The frees are durable: punch the space back to the filesystem (best effort: a failure only
        // costs space until the slot is reused) and hand the slots to the allocator.
        for slot in capture.frees {
            guard let file = capture.files[slot.file], let chunkSize = capture.chunkSizes[slot.file]
            else { continue }
            do {
                try file.punchHole(at: slot.index * UInt64(chunkSize), length: UInt64(chunkSize))
            } catch {
                logger.warning("could not punch a freed slot", metadata: ["slot": "\(slot)", "error": "\(error)"])
            }
        }
        monitor.withLock {
            state.committingChunks = []
            state.sharedInCommit = []
            for slot in capture.frees { state.allocators[slot.file]!.makeReusable(slot.index) }
        }
        monitor.broadcast()
    }

    /// Whether this commit syncs the checksum files: a timer commit always does, others once per
    /// `checksumSyncIntervalNanoseconds`. Skipping is safe because a region's mark is cleared only by a
    /// commit that synced its checksums after its data; until then a crash recomputes them.
    private func checksumSyncDue(timer: Bool, now: ContinuousClock.Instant) -> Bool {
        lastChecksumSync.withLock { last in
            let interval = Duration.nanoseconds(Int64(clamping: options.checksumSyncIntervalNanoseconds))
            guard timer || last.map({ now - $0 >= interval }) ?? true else { return false }
            last = now
            return true
        }
    }

    /// Makes a snapshot's cut durable without syncing any data: one metadata transaction with the
    /// snapshot and its volume's new epoch. Neither points at data, so the ordering rule holds; the
    /// versions written before the cut become durable with the next group commit (a FLUSH, a FUA write or
    /// the timer), exactly as they would have without the snapshot. After a power cut before that, the
    /// snapshot holds what the volume holds from before the cut: the writes that were durable.
    func commitCut(snapshot: SnapshotRecord, volume: VolumeRecord) throws {
        var transaction = MetadataTransaction()
        transaction.upsertSnapshots = [snapshot]
        transaction.upsertVolumes = [volume]
        do {
            try mapCommitSerial.withLock {
                keepNewerEpochs(in: &transaction)
                try metadata.commit(transaction)
            }
        } catch {
            throw failStop(file: media.location, call: "snapshot commit", error: error)
        }
    }

    /// A transaction captured before a snapshot's cut may reach the store after the cut's own commit:
    /// the volume's durable epoch must not go back (versions written after the cut would then be born
    /// in the snapshot's epoch and overwrite it in place). Epochs only grow, so the newest one wins. The
    /// caller holds `mapCommitSerial`; the monitor is taken here.
    private func keepNewerEpochs(in transaction: inout MetadataTransaction) {
        guard !transaction.upsertVolumes.isEmpty else { return }
        monitor.withLock {
            for index in transaction.upsertVolumes.indices {
                let id = transaction.upsertVolumes[index].id
                let committed = state.committedEpochs[id] ?? 0
                if transaction.upsertVolumes[index].epoch < committed {
                    transaction.upsertVolumes[index].epoch = committed
                } else {
                    state.committedEpochs[id] = transaction.upsertVolumes[index].epoch
                }
            }
            for id in transaction.deleteVolumes { state.committedEpochs[id] = nil }
        }
    }

    /// Adds to the captured restore map blocks the bits write-intent commits stored since the capture
    /// (the caller holds `mapCommitSerial`; the monitor is taken here).
    private func keepRestoreIntent(in capture: inout CommitCapture) {
        guard !capture.restoreBlocks.isEmpty else { return }
        monitor.withLock {
            for index in capture.restoreBlocks {
                let block = capture.transaction.cloneMapBlocks[index]
                guard let group = state.cloneGroups.groups[block.sourceID],
                    var words = ExtentMap.decode(block.bits ?? [])
                else { continue }
                let stored = group.persistentRestoreMap.durable.blockWords(Int(block.block))
                guard stored.count == words.count else { continue }
                for i in words.indices { words[i] |= stored[i] }
                capture.transaction.cloneMapBlocks[index].bits = ExtentMap.encode(words)
                group.persistentRestoreMap.inCommit[Int(block.block)] = words
            }
        }
    }

    private func captureDirtyState(requested: Bool) -> CommitCapture? {
        monitor.withLock { () -> CommitCapture? in
            guard state.failure == nil else { return nil }
            let dirty = state.dirty
            let metadataChanged =
                !dirty.isEmpty || !state.pendingFrees.isEmpty || !state.sharedUntilCommit.isEmpty
                || state.cloneGroups.isDirty
            guard metadataChanged || (requested && state.unsyncedData) else {
                return nil
            }
            state.unsyncedData = false
            var capture = CommitCapture()
            var t = MetadataTransaction()
            t.upsertStores = dirty.stores
            t.upsertSlotFiles = dirty.slotFiles
            t.deleteVolumes = dirty.deletedVolumes
            t.upsertVolumes = dirty.volumes.compactMap { state.volumes[$0]?.record }
            t.deleteSnapshots = dirty.deletedSnapshots
            t.upsertSnapshots = dirty.snapshots
            t.chunks.reserveCapacity(dirty.chunks.count)
            for key in dirty.chunks {
                // A deleted volume's rows go with `deleteVolumes`.
                guard let volume = state.volumes[key.volume] else { continue }
                t.chunks.append((key.volume, key.chunk, volume.map[key.chunk]?.versions ?? []))
            }
            capture.restoreBlocks = cloneGroups.capture(into: &t)
            capture.transaction = t
            capture.frees = state.pendingFrees
            capture.files = files
            capture.chunkSizes = state.slotFileRecords.mapValues(\.chunkSize)
            state.committingChunks = dirty.chunks
            state.sharedInCommit = state.sharedUntilCommit
            state.sharedUntilCommit = []
            state.pendingFrees = []
            state.dirty = DirtySet()
            return capture
        }
    }
}
