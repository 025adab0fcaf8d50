import CairnIO
import Logging
import Synchronization

extension EngineError.Code {
    /// Data read from the disk does not match its checksum: the read fails rather than return it.
    public static let checksumMismatch = EngineError.Code(rawValue: "checksum_mismatch")
}

extension Pool {
    /// Wraps a slot file just opened in its checksum file (unless checksums are off), recomputing the
    /// checksums of regions an unclean stop left marked.
    func checksummed(_ raw: any StorageFile, slotFile name: String, in store: String?) throws -> any StorageFile {
        let sidecar: any StorageFile
        let checksums: ChecksumStore
        do {
            sidecar = try media.openChecksumFile(forSlotFile: name, in: store)
            guard options.dataChecksums else {
                // Writes from now on leave the checksums stale: mark every region, so that the next open
                // with checksums recomputes them all from the data instead of failing good reads.
                let all = [UInt8](repeating: 0xFF, count: Int(ChecksumLayout.intentAreaSize))
                try all.withUnsafeBytes { try sidecar.write($0, at: 0) }
                try sidecar.sync()
                return raw
            }
            checksums = try ChecksumStore(file: sidecar)
            // An empty checksum file beside a slot file with data: a pool from before checksums.
            if try sidecar.size() == 0, try raw.size() > 0 {
                slotFilesWithUncheckedData.add(1, ordering: .relaxed)
                logger.notice(
                    "slot file holds data written before data checksums: it is read unchecked until rewritten",
                    metadata: ["file": "\(name)"])
            }
        } catch {
            throw EngineError.io("opening the checksum file of \(name)", error)
        }
        let path = sidecar.path
        let file = ChecksummedSlotFile(raw, checksums: checksums, counters: checksumCounters) { [weak self] error in
            guard let self else { return error }
            return self.failStop(file: path, call: "checksum file I/O", error: error)
        }
        let marked = checksums.markedRegions
        if !marked.isEmpty {
            do {
                try file.recompute(regions: marked)
            } catch {
                throw EngineError.io("recomputing the checksums of \(name)", error)
            }
            logger.notice(
                "recomputed data checksums of regions written before an unclean stop",
                metadata: ["file": "\(name)", "regions": "\(marked.count)"])
        }
        return file
    }

    /// The checksummed slot files among `files`.
    static func checksummedFiles(_ files: some Sequence<any StorageFile>) -> [ChecksummedSlotFile] {
        files.compactMap { (($0 as? MeteredStorageFile)?.base ?? $0) as? ChecksummedSlotFile }
    }

    /// Before a commit syncs: which write-intent marks it may clear.
    func beginChecksumCommit(_ files: [UInt16: any StorageFile]) -> [(ChecksumStore, IntentCandidates)] {
        Self.checksummedFiles(files.values).map { ($0.checksums, $0.checksums.beginCommit()) }
    }

    /// After the data sync, before the metadata commit: the checksums of that data reach the disk.
    func syncChecksums(_ intents: [(ChecksumStore, IntentCandidates)]) throws {
        for (store, _) in intents {
            try store.writeDirtyPages()
            try store.sync()
        }
    }

    /// After a successful commit: idle regions lose their marks.
    func finishChecksumCommit(_ intents: [(ChecksumStore, IntentCandidates)]) throws {
        for (store, candidates) in intents { try store.finishCommit(candidates) }
    }

    /// At a clean close (after the last commit): data and checksums synced, every mark cleared, so the
    /// next open recomputes nothing.
    func closeChecksums() {
        guard !hasFailed else { return }
        let all = monitor.withLock { Self.checksummedFiles(files.values) }
        do {
            for file in all {
                try file.base.sync()
                try file.checksums.writeDirtyPages()
                try file.checksums.sync()
                try file.checksums.clearAllMarks()
                try file.checksums.sync()
            }
        } catch {
            failStop(file: media.location, call: "checksum file sync at close", error: error)
        }
    }

    /// Write-intent regions marked now, over all slot files (tests).
    @_spi(Testing)
    public var markedChecksumRegionCount: Int {
        monitor.withLock { Self.checksummedFiles(files.values) }.reduce(0) { $0 + $1.checksums.markedRegions.count }
    }

    /// Data blocks found not to match their checksums since the pool opened (reads, scrubs).
    public var checksumMismatchCount: UInt64 { checksumCounters.mismatches.load(ordering: .relaxed) }

    /// True when slot data is checksummed (`PoolOptions.dataChecksums`).
    public var checksumsEnabled: Bool { options.dataChecksums }

    /// The engine error, log line and counter for a read that hit damaged data (the counter was bumped
    /// where the mismatch was found). `volumeOffset` is the damaged block's offset in the volume.
    func checksumFailure(
        _ mismatch: ChecksumMismatch, volumeID: UInt64, snapshotEpoch: UInt32?, volumeOffset: UInt64, file: UInt16
    ) -> EngineError {
        let (name, snapshot, slot) = monitor.withLock { () -> (String, String?, SlotAddress) in
            let volume = state.volumes[volumeID]
            let snapshot = snapshotEpoch.flatMap { epoch in volume?.snapshots.first { $0.epoch == epoch }?.name }
            let chunkSize = UInt64(state.slotFileRecords[file]?.chunkSize ?? 1)
            return (volume?.record.name ?? "#\(volumeID)", snapshot, SlotAddress(file: file, index: mismatch.fileOffset / chunkSize))
        }
        let what = snapshot.map { "snapshot '\($0)' of volume '\(name)'" } ?? "volume '\(name)'"
        logger.error(
            "data checksum mismatch: the read fails with EIO",
            metadata: [
                "volume": "\(name)", "snapshot": "\(snapshot ?? "-")", "offset": "\(volumeOffset)", "slot": "\(slot)",
                "file": "\(mismatch.path)", "file_offset": "\(mismatch.fileOffset)",
            ])
        return EngineError(
            .checksumMismatch,
            "data of \(what) at offset \(volumeOffset) does not match its checksum (slot \(slot)): the disk returned "
                + "damaged data; run `cairn pool scrub` and restore the range from a snapshot, mirror or backup",
            cause: mismatch)
    }
}

extension ChecksummedSlotFile {
    /// Bytes read at a time when recomputing checksums.
    static let recomputeBatch = 1 << 20

    /// Recomputes the checksums of `regions` from the data in them now (after an unclean stop). Their
    /// marks stay until a commit has synced data and checksums together.
    ///
    /// Past the end of the file the checksums become unknown: a crash can drop a file's unsynced growth
    /// and keep the checksums written for it, and a slot there, free after the crash, is read (as zeros)
    /// by the first partial write that reuses it.
    func recompute(regions: [UInt64]) throws {
        let size = try base.size()
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: Self.recomputeBatch, alignment: 4096)
        defer { buffer.deallocate() }
        let block = Int(ChecksumLayout.blockSize)
        let entriesEnd = try checksums.blocksWithEntries() * ChecksumLayout.blockSize
        for region in regions {
            var offset = region * ChecksumLayout.intentRegionSize
            let regionEnd = offset + ChecksumLayout.intentRegionSize
            let end = min(regionEnd, size)
            var beyond = max(offset, (end + UInt64(block) - 1) / UInt64(block) * UInt64(block))
            let clearEnd = min(regionEnd, entriesEnd)
            while beyond < clearEnd {
                let count = Int(min(UInt64(Self.recomputeBatch), clearEnd - beyond)) / block
                try checksums.store(
                    from: beyond / ChecksumLayout.blockSize, [UInt32](repeating: ChecksumLayout.unknown, count: count))
                beyond += UInt64(count * block)
            }
            while offset < end {
                let length = Int(min(UInt64(Self.recomputeBatch), end - offset))
                let blocks = (length + block - 1) / block
                let piece = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<(blocks * block)])
                piece.initializeMemory(as: UInt8.self, repeating: 0)
                try base.read(into: piece, at: offset)
                var values = [UInt32](repeating: 0, count: blocks)
                for i in 0..<blocks {
                    values[i] = ChecksumLayout.checksum(UnsafeRawBufferPointer(rebasing: piece[(i * block)..<((i + 1) * block)]))
                }
                try checksums.store(from: offset / ChecksumLayout.blockSize, values)
                offset += UInt64(length)
            }
        }
    }
}

extension ChecksumStore {
    /// Clears every mark (clean close: nothing is in flight and everything is synced).
    func clearAllMarks() throws {
        try intentWriteSerial.withLock {
            let wasMarked = intentMonitor.withLock { () -> Bool in
                let wasMarked = intent.bitmap.contains { $0 != 0 }
                intent.bitmap = [UInt8](repeating: 0, count: intent.bitmap.count)
                intent.activity = [:]
                return wasMarked
            }
            guard wasMarked else { return }
            let zeros = [UInt8](repeating: 0, count: Int(ChecksumLayout.intentAreaSize))
            try zeros.withUnsafeBytes { try file.write($0, at: 0) }
        }
    }
}
