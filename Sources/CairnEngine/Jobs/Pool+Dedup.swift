import CairnIO
import Crypto
import Foundation
import Logging

/// What a dedup run found and did.
public struct DedupReport: Sendable, Hashable {
    /// Versions whose data was hashed.
    public var scannedVersions = 0
    /// Versions switched to share another version's slot.
    public var sharedVersions = 0
    /// Data bytes no longer stored twice.
    public var savedBytes: UInt64 = 0
}

/// A version found during the scan: where it is and what its data hashes to.
private struct DedupCandidate {
    var volumeID: UInt64
    var chunk: UInt64
    var version: ChunkVersion
}

private struct DedupKey: Hashable {
    var file: UInt16
    var dataMask: UInt64
    var digest: SHA256Digest
}

extension Pool {
    /// Finds versions whose data is identical (same sub-blocks, same bytes: SHA-256, then a byte
    /// comparison under the chunk locks) across the given volumes and their snapshots, and makes them
    /// share one slot. Runs alongside host I/O: a later write to a shared chunk gets its own copy through
    /// the ordinary copy-on-write path. Returns the job id; `jobs` reports progress and the result.
    @discardableResult
    public func startDedup(volumes names: [String]? = nil) throws -> UInt64 {
        let ids = try monitor.withLock { () -> [UInt64] in
            try checkWritable()
            if let names { return try names.map { try state.volumeID(named: $0) } }
            return state.volumes.keys.sorted()
        }
        let total = monitor.withLock { ids.reduce(UInt64(0)) { $0 + UInt64(state.volumes[$1]?.map.count ?? 0) } }
        let target = names?.joined(separator: ",") ?? "pool"
        let job = jobs.start(kind: "dedup", target: target, total: total, unit: "chunks")
        let thread = Thread { [self] in
            setCurrentThreadName("cairn-dedup")
            do {
                let report = try runDedup(volumeIDs: ids, job: job)
                jobs.finish(
                    job, .succeeded,
                    message: "shared \(report.sharedVersions) of \(report.scannedVersions) versions, saved \(report.savedBytes) bytes")
            } catch let error as EngineError where error.code == .closed {
                jobs.finish(job, .cancelled, message: "\(error)")
            } catch {
                jobs.finish(job, .failed, message: "\(error)")
            }
        }
        thread.start()
        return job
    }

    /// The whole dedup pass, synchronously (the job thread; tests).
    func runDedup(volumeIDs: [UInt64], job: UInt64) throws -> DedupReport {
        var report = DedupReport()
        // Versions written from now on are born in a new epoch: a write to a chunk shared below then
        // adds a version on top instead of copying the shared data (see `ChunkAccess`).
        for id in volumeIDs { try advanceEpoch(volumeID: id) }
        var firstSeen: [DedupKey: DedupCandidate] = [:]
        var examined: UInt64 = 0
        for id in volumeIDs {
            let chunks = monitor.withLock { state.volumes[id].map { $0.present.chunks(in: 0..<UInt64.max) } ?? [] }
            for chunk in chunks {
                if jobs.isCancelled(job) { throw EngineError(.closed, "dedup cancelled") }
                examined += 1
                if examined % 256 == 0 { jobs.progress(job, done: examined) }
                let versions = monitor.withLock { state.volumes[id]?.map[chunk]?.versions ?? [] }
                for version in versions where version.hasSlot {
                    report.scannedVersions += 1
                    let candidate = DedupCandidate(volumeID: id, chunk: chunk, version: version)
                    guard let digest = try digest(of: version) else { continue }
                    let key = DedupKey(file: version.slot.file, dataMask: version.dataMask, digest: digest)
                    guard let keep = firstSeen[key] else {
                        firstSeen[key] = candidate
                        continue
                    }
                    guard keep.version.slot != version.slot else { continue }
                    if try share(candidate, with: keep) {
                        report.sharedVersions += 1
                        report.savedBytes += UInt64(version.dataMask.nonzeroBitCount) * UInt64(subBlockSize(of: version))
                    }
                }
            }
        }
        jobs.progress(job, done: examined)
        try flush()
        logger.info(
            "dedup finished",
            metadata: ["shared": "\(report.sharedVersions)", "saved_bytes": "\(report.savedBytes)"])
        return report
    }

    private func subBlockSize(of version: ChunkVersion) -> UInt32 {
        monitor.withLock {
            let chunkSize = state.slotFileRecords[version.slot.file]?.chunkSize ?? ChunkGeometry.defaultChunkSize
            return (try? ChunkGeometry(chunkSize: chunkSize).subBlockSize) ?? ChunkGeometry.minimumSubBlockSize
        }
    }

    /// SHA-256 of a version's data sub-blocks, read without locks: a hash taken while the slot changes
    /// is only a hint, since sharing compares the bytes again under the chunk locks.
    private func digest(of version: ChunkVersion) throws -> SHA256Digest? {
        guard let bytes = try dataBytes(of: version) else { return nil }
        return SHA256.hash(data: bytes)
    }

    /// The bytes of a version's data sub-blocks, concatenated.
    private func dataBytes(of version: ChunkVersion) throws -> [UInt8]? {
        let found = monitor.withLock { () -> (any StorageFile, UInt32)? in
            guard let file = files[version.slot.file], let record = state.slotFileRecords[version.slot.file] else {
                return nil
            }
            return (file, record.chunkSize)
        }
        guard let (file, chunkSize) = found else { return nil }
        let sub = Int((try ChunkGeometry(chunkSize: chunkSize)).subBlockSize)
        var bytes = [UInt8](repeating: 0, count: version.dataMask.nonzeroBitCount * sub)
        var position = 0
        try bytes.withUnsafeMutableBytes { buffer in
            try version.dataMask.forEachRun { first, count in
                let part = UnsafeMutableRawBufferPointer(rebasing: buffer[position..<(position + count * sub)])
                try file.read(into: part, at: version.slot.index * UInt64(chunkSize) + UInt64(first * sub))
                position += count * sub
            }
        }
        return bytes
    }

    /// Points `duplicate` at `keep`'s slot if both are still what the scan saw and their bytes are equal.
    /// Both chunks are locked exclusive meanwhile, so no write changes either slot under the comparison.
    private func share(_ duplicate: DedupCandidate, with keep: DedupCandidate) throws -> Bool {
        let chunks = Set([ChunkKey(volume: duplicate.volumeID, chunk: duplicate.chunk), ChunkKey(volume: keep.volumeID, chunk: keep.chunk)])
        let locked = try monitor.withLock { () -> Bool in
            while true {
                try checkWritable()
                guard chunks.allSatisfy({ state.volumes[$0.volume] != nil }) else { return false }
                if chunks.allSatisfy({ state.volumes[$0.volume]!.locks.isAvailable($0.chunk, exclusive: true) }) {
                    for key in chunks { state.volumes[key.volume]!.locks.acquire(key.chunk, exclusive: true) }
                    return true
                }
                monitor.wait()
            }
        }
        guard locked else { return false }
        defer {
            monitor.withLock {
                for key in chunks { state.volumes[key.volume]?.locks.release(key.chunk, exclusive: true) }
            }
            monitor.broadcast()
        }
        let unchanged = monitor.withLock {
            [duplicate, keep].allSatisfy { candidate in
                state.volumes[candidate.volumeID]?.map[candidate.chunk]?.versions.contains(candidate.version) == true
            }
        }
        guard unchanged, let a = try dataBytes(of: duplicate.version), let b = try dataBytes(of: keep.version), a == b
        else { return false }
        monitor.withLock {
            guard let volume = state.volumes[duplicate.volumeID], var versions = volume.map[duplicate.chunk]?.versions,
                let index = versions.firstIndex(of: duplicate.version)
            else { return }
            state.retain(keep.version.slot)
            state.release(duplicate.version.slot)
            versions[index].slot = keep.version.slot
            volume.setVersions(duplicate.chunk, VersionList(versions))
            state.markDirty(duplicate.volumeID, duplicate.chunk)
        }
        return true
    }

    /// Runs `body` with no write of `volume` between planning and installing (monitor held): new writes
    /// wait, writes in flight finish first. Used wherever the epoch changes.
    func withEpochBarrier<T>(_ volume: VolumeState, _ body: () throws -> T) rethrows -> T {
        while volume.epochChangePending { monitor.wait() }
        volume.epochChangePending = true
        defer { volume.epochChangePending = false }
        while volume.writesInFlight > 0 { monitor.wait() }
        return try body()
    }

    /// Starts a new epoch for a volume without taking a snapshot: versions written from now on are born
    /// after everything that exists. Uses the same short write barrier as a snapshot and commits.
    func advanceEpoch(volumeID: UInt64) throws {
        try monitor.withLock {
            try checkWritable()
            let volume = try state.liveVolume(volumeID)
            withEpochBarrier(volume) { volume.record.epoch += 1 }
            state.dirty.volumes.insert(volume.id)
        }
        monitor.broadcast()
        try flush()
    }
}
