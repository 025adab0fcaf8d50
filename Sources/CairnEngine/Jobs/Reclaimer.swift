import CairnIO
import Foundation
import Logging

/// A version that keeps some readers but holds data none of them reads any more: that data is punched
/// out of its (unshared) slot.
private struct DeadData {
    var chunk: UInt64
    var birth: UInt32
    var slot: SlotAddress
    var dead: UInt64
}

/// `pool.reclaim`: the background job that gives back what no reader of a volume needs any more after
/// a snapshot deletion: versions nobody reads are dropped, data nobody reads is punched out. Owns no
/// state of its own; its progress is a job in `pool.jobs`.
///
/// Core calls it uses: `monitor` and `state` (chunk locks, versions, `release`, `markDirty`), the slot
/// `files` it punches, and `flush()` when a pass is done.
public final class Reclaimer: Sendable {
    unowned let pool: Pool

    init(pool: Pool) { self.pool = pool }

    /// Chunks examined per pass under the pool mutex.
    static let batchChunks = 256

    /// Starts reclaiming what no reader of the volume needs any more (after a snapshot deletion, or at
    /// open in case a crash interrupted one). Returns the job id.
    @discardableResult
    func start(volumeID: UInt64, target: String) -> UInt64 {
        let total = pool.monitor.withLock { UInt64(pool.state.volumes[volumeID]?.present.count ?? 0) }
        let job = pool.jobs.start(kind: "reclaim", target: target, total: total, unit: "chunks")
        // The thread keeps the pool alive until it is done, as the service only holds it unowned.
        let thread = Thread { [self, pool] in
            setCurrentThreadName("cairn-reclaim")
            withExtendedLifetime(pool) { run(volumeID: volumeID, job: job) }
        }
        thread.start()
        return job
    }

    /// Runs reclaim synchronously (tests and startup).
    func run(volumeID: UInt64, job: UInt64) {
        var examined: UInt64 = 0
        var droppedVersions = 0
        var cursor: UInt64 = 0
        do {
            while true {
                if pool.jobs.isCancelled(job) {
                    pool.jobs.finish(job, .cancelled, message: "stopped after \(examined) chunks")
                    return
                }
                let scan = pool.monitor.withLock { () -> (chunks: [UInt64], next: UInt64?)? in
                    guard let volume = pool.state.volumes[volumeID] else { return nil }
                    var chunks: [UInt64] = []
                    var next = cursor
                    var scanned = 0
                    while scanned < Self.batchChunks, let chunk = volume.present.next(atOrAfter: next) {
                        scanned += 1
                        next = chunk + 1
                        if volume.map[chunk]!.count > 1 {
                            chunks.append(chunk)
                        }
                    }
                    return (chunks, scanned < Self.batchChunks ? nil : next)
                }
                guard let scan else { break }
                droppedVersions += try batch(volumeID: volumeID, chunks: scan.chunks)
                examined += UInt64(scan.chunks.count)
                pool.jobs.progress(job, done: examined)
                guard let next = scan.next else { break }
                cursor = next
            }
            try pool.flush()
            pool.jobs.finish(job, .succeeded, message: "dropped \(droppedVersions) versions no reader needed")
        } catch {
            pool.jobs.finish(job, .failed, message: "\(error)")
            pool.logger.error("reclaim failed", metadata: ["error": "\(error)"])
        }
    }

    /// Drops versions no reader uses and punches out data nobody reads. Returns versions dropped.
    private func batch(volumeID id: UInt64, chunks: [UInt64]) throws -> Int {
        guard !chunks.isEmpty else { return 0 }
        var dropped = 0
        let (work, slotFiles, geometry) = try pool.monitor.withLock {
            () -> ([DeadData], [UInt16: any StorageFile], ChunkGeometry) in
            while true {
                let volume = try pool.state.liveVolume(id)
                guard chunks.allSatisfy({ volume.locks.isAvailable($0, exclusive: true) }) else {
                    pool.monitor.wait()
                    continue
                }
                // Readers: every snapshot (hidden ones included until their deletion is durable; clones
                // pin snapshots) and the live volume.
                let readers = volume.snapshots.map(\.epoch) + [UInt32.max]
                var work: [DeadData] = []
                for chunk in chunks {
                    guard let list = volume.map[chunk] else { continue }
                    var versions = list.versions
                    var used = [UInt64](repeating: 0, count: versions.count)
                    for epoch in readers {
                        var remaining = volume.geometry.fullMask
                        for index in versions.indices.reversed() where versions[index].birth <= epoch {
                            let take = remaining & versions[index].definedMask
                            used[index] |= take
                            remaining &= ~take
                            if remaining == 0 { break }
                        }
                    }
                    var kept: [ChunkVersion] = []
                    for (index, version) in versions.enumerated() {
                        if used[index] == 0 {
                            pool.state.release(version.slot)
                            dropped += 1
                            continue
                        }
                        let dead = version.dataMask & ~used[index]
                        if dead != 0 && version.hasSlot && pool.state.refcount(version.slot) == 1
                            && !pool.state.mayBeDurablyShared(version.slot)
                        {
                            work.append(DeadData(chunk: chunk, birth: version.birth, slot: version.slot, dead: dead))
                        }
                        kept.append(version)
                    }
                    if kept.count != versions.count {
                        versions = kept
                        volume.setVersions(chunk, versions.isEmpty ? nil : VersionList(versions))
                        pool.state.markDirty(id, chunk)
                    }
                }
                for chunk in Set(work.map(\.chunk)) { volume.locks.acquire(chunk, exclusive: true) }
                return (work, pool.files, volume.geometry)
            }
        }
        guard !work.isEmpty else { return dropped }
        let sub = UInt64(geometry.subBlockSize)
        var failure: (any Error)?
        do {
            for item in work {
                try item.dead.forEachRun { first, count in
                    try slotFiles[item.slot.file]!.punchHole(
                        at: item.slot.index * UInt64(geometry.chunkSize) + UInt64(first) * sub, length: UInt64(count) * sub)
                }
            }
        } catch {
            failure = error
        }
        pool.monitor.withLock {
            guard let volume = pool.state.volumes[id] else { return }
            for chunk in Set(work.map(\.chunk)) { volume.locks.release(chunk, exclusive: true) }
            guard failure == nil else { return }
            pool.state.unsyncedData = true
            for item in work {
                guard var versions = volume.map[item.chunk]?.versions,
                    let index = versions.firstIndex(where: { $0.birth == item.birth })
                else { continue }
                versions[index].dataMask &= ~item.dead
                if versions[index].dataMask == 0 {
                    pool.state.release(versions[index].slot)
                    versions[index].slot = .none
                }
                volume.setVersions(item.chunk, VersionList(versions))
                pool.state.markDirty(id, item.chunk)
            }
        }
        pool.monitor.broadcast()
        if let failure { throw EngineError.io("reclaiming space", failure) }
        return dropped
    }
}
