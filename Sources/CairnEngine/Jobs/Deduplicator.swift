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

/// `pool.dedup`: the background job that finds versions holding identical data and makes them share one
/// slot. Owns no state of its own; its progress and result are a job in `pool.jobs`.
///
/// Core calls it uses: `monitor` and `state` (chunk locks, versions, `retain`/`release`, `markDirty`),
/// `checkWritable()`, `withEpochBarrier`, the slot `files` it reads, and `flush()`.
public final class Deduplicator: Sendable {
    unowned let pool: Pool

    init(pool: Pool) { self.pool = pool }

    /// Finds versions whose data is identical (same sub-blocks, same bytes: SHA-256, then a byte
    /// comparison under the chunk locks) across the given volumes and their snapshots, and makes them
    /// share one slot. Runs alongside host I/O: a later write to a shared chunk gets its own copy through
    /// the ordinary copy-on-write path. Returns the job id; `pool.jobs` reports progress and the result.
    @discardableResult
    public func start(volumes names: [String]? = nil) throws -> UInt64 {
        let ids = try pool.monitor.withLock { () -> [UInt64] in
            try pool.checkWritable()
            if let names { return try names.map { try pool.state.volumeID(named: $0) } }
            return pool.state.volumes.keys.sorted()
        }
        let total = pool.monitor.withLock {
            ids.reduce(UInt64(0)) { $0 + UInt64(pool.state.volumes[$1]?.map.count ?? 0) }
        }
        let target = names?.joined(separator: ",") ?? "pool"
        let job = pool.jobs.start(kind: "dedup", target: target, total: total, unit: "chunks")
        pool.jobs.runDetached(job, threadName: "cairn-dedup", keeping: pool) { [self] in
            let report = try run(volumeIDs: ids, job: job)
            return "shared \(report.sharedVersions) of \(report.scannedVersions) versions, saved \(report.savedBytes) bytes"
        }
        return job
    }

    /// The whole dedup pass, synchronously (the job thread; tests).
    func run(volumeIDs: [UInt64], job: UInt64) throws -> DedupReport {
        var report = DedupReport()
        // Versions written from now on are born in a new epoch: a write to a chunk shared below then
        // adds a version on top instead of copying the shared data (see `ChunkAccess`).
        for id in volumeIDs { try advanceEpoch(volumeID: id) }
        var firstSeen: [DedupKey: DedupCandidate] = [:]
        var examined: UInt64 = 0
        for id in volumeIDs {
            let chunks = pool.monitor.withLock {
                pool.state.volumes[id].map { $0.present.chunks(in: 0..<UInt64.max) } ?? []
            }
            for chunk in chunks {
                if pool.jobs.isCancelled(job) { throw EngineError(.closed, "dedup cancelled") }
                examined += 1
                if examined % 256 == 0 { pool.jobs.progress(job, done: examined) }
                let versions = pool.monitor.withLock { pool.state.volumes[id]?.map[chunk]?.versions ?? [] }
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
        pool.jobs.progress(job, done: examined)
        try pool.flush()
        pool.logger.info(
            "dedup finished",
            metadata: ["shared": "\(report.sharedVersions)", "saved_bytes": "\(report.savedBytes)"])
        return report
    }

    private func subBlockSize(of version: ChunkVersion) -> UInt32 {
        pool.monitor.withLock {
            let chunkSize = pool.state.slotFileRecords[version.slot.file]?.chunkSize ?? ChunkGeometry.defaultChunkSize
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
        let found = pool.monitor.withLock { () -> (any StorageFile, UInt32)? in
            guard let file = pool.files[version.slot.file], let record = pool.state.slotFileRecords[version.slot.file]
            else {
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
        let locked = try pool.monitor.withLock { () -> Bool in
            while true {
                try pool.checkWritable()
                guard chunks.allSatisfy({ pool.state.volumes[$0.volume] != nil }) else { return false }
                if chunks.allSatisfy({ pool.state.volumes[$0.volume]!.locks.isAvailable($0.chunk, exclusive: true) }) {
                    for key in chunks { pool.state.volumes[key.volume]!.locks.acquire(key.chunk, exclusive: true) }
                    return true
                }
                pool.monitor.wait()
            }
        }
        guard locked else { return false }
        defer {
            pool.monitor.withLock {
                for key in chunks { pool.state.volumes[key.volume]?.locks.release(key.chunk, exclusive: true) }
            }
            pool.monitor.broadcast()
        }
        let unchanged = pool.monitor.withLock {
            [duplicate, keep].allSatisfy { candidate in
                pool.state.volumes[candidate.volumeID]?.map[candidate.chunk]?.versions.contains(candidate.version)
                    == true
            }
        }
        guard unchanged, let a = try dataBytes(of: duplicate.version), let b = try dataBytes(of: keep.version), a == b
        else { return false }
        pool.monitor.withLock {
            guard let volume = pool.state.volumes[duplicate.volumeID],
                var versions = volume.map[duplicate.chunk]?.versions,
                let index = versions.firstIndex(of: duplicate.version)
            else { return }
            pool.state.retain(keep.version.slot)
            pool.state.release(duplicate.version.slot)
            versions[index].slot = keep.version.slot
            volume.setVersions(duplicate.chunk, VersionList(versions))
            pool.state.markDirty(duplicate.volumeID, duplicate.chunk)
        }
        return true
    }

    /// Starts a new epoch for a volume without taking a snapshot: versions written from now on are born
    /// after everything that exists. Uses the same short write barrier as a snapshot and commits.
    private func advanceEpoch(volumeID: UInt64) throws {
        try pool.monitor.withLock {
            try pool.checkWritable()
            let volume = try pool.state.liveVolume(volumeID)
            pool.withEpochBarrier(volume) { volume.record.epoch += 1 }
            pool.state.dirty.volumes.insert(volume.id)
        }
        pool.monitor.broadcast()
        try pool.flush()
    }
}
