import CairnIO
import Foundation
import Logging
import Synchronization

/// One damaged 4 KiB block as a scrub reports it: where a host sees it.
public struct ScrubDamage: Sendable, Hashable {
    public var volume: String
    /// Byte offset of the block in the volume (and in the snapshots listed).
    public var offset: UInt64
    public var length: UInt64
    /// The live volume reads this block (false: only the snapshots in `snapshots` do).
    public var live: Bool
    /// Snapshots of `volume` that read this block.
    public var snapshots: [String]
    /// Where the block lives.
    public var slot: SlotAddress
}

/// What a scrub found.
public struct ScrubReport: Sendable, Hashable {
    /// The scrub's job.
    public var job: UInt64
    public var finished: Bool
    /// Bytes of slot data read and compared with their checksums.
    public var verifiedBytes: UInt64 = 0
    /// Bytes read that have no checksum yet (written before this pool had checksums).
    public var uncheckedBytes: UInt64 = 0
    public var damage: [ScrubDamage] = []

    /// One line for the job's message.
    public var summary: String {
        let head = "verified \(verifiedBytes) bytes" + (uncheckedBytes > 0 ? ", \(uncheckedBytes) without checksums" : "")
        guard !damage.isEmpty else { return head + ", no damage" }
        let shown = damage.prefix(Self.damageInSummary).map { d in
            "\(d.volume)@\(d.offset)" + (d.live ? "" : " (snapshots \(d.snapshots.joined(separator: ",")))")
        }
        let more = damage.count > Self.damageInSummary ? ", ..." : ""
        return head + ", \(damage.count) damaged blocks: " + shown.joined(separator: ", ") + more
    }

    /// Damaged blocks named in the job message; the report lists all (up to `maximumDamageListed`).
    static let damageInSummary = 8
    /// A bound on the report's memory when a disk is badly damaged; the count goes on past it.
    public static let maximumDamageListed = 10_000
}

/// `pool.scrub`: the background job that reads every version's data and checks it against its checksums,
/// reporting damage by volume, offset and snapshot. Owns the last report (`lastReport`, behind its own
/// mutex: the pool mutex never guards it); progress is a job in `pool.jobs`.
///
/// Core calls it uses: `monitor` and `state` (versions, `resolve` to name who reads a damaged block),
/// `checkWritable()`, `options.dataChecksums`, and the slot `files` it reads (`Pool.checksummedFiles`).
public final class Scrubber: Sendable {
    unowned let pool: Pool
    /// The last scrub's report, updated as it runs.
    private let reports = Mutex<ScrubReport?>(nil)

    init(pool: Pool) { self.pool = pool }

    /// Reads every chunk version's data in every volume, compares it with its checksums and reports the
    /// damage by volume, offset and snapshot. Runs in the background alongside host I/O; returns the job.
    @discardableResult
    public func start() throws -> UInt64 {
        guard pool.options.dataChecksums else {
            throw EngineError(.invalidArgument, "data checksums are off in this pool: there is nothing to verify")
        }
        let (ids, total) = try pool.monitor.withLock { () -> ([UInt64], UInt64) in
            try pool.checkWritable()
            let ids = pool.state.volumes.keys.sorted()
            return (ids, ids.reduce(UInt64(0)) { $0 + UInt64(pool.state.volumes[$1]?.map.count ?? 0) })
        }
        if let running = pool.jobs.list().first(where: { $0.kind == "scrub" && $0.state == .running }) {
            throw EngineError(.busy, "a scrub is already running (job \(running.id)); follow it with `cairn job show \(running.id) --wait`")
        }
        let job = pool.jobs.start(kind: "scrub", target: "pool", total: total, unit: "chunks")
        reports.withLock { $0 = ScrubReport(job: job, finished: false) }
        pool.jobs.runDetached(job, threadName: "cairn-scrub", keeping: pool) { [self] in
            try run(volumeIDs: ids, job: job).summary
        }
        return job
    }

    /// A whole scrub on the caller's thread, registered as a job like `start`'s (tests).
    @_spi(Testing)
    public func runNow() throws -> ScrubReport {
        let ids = pool.monitor.withLock { pool.state.volumes.keys.sorted() }
        let job = pool.jobs.start(kind: "scrub", target: "pool", total: 0, unit: "chunks")
        let report = try run(volumeIDs: ids, job: job)
        pool.jobs.finish(job, .succeeded, message: report.summary)
        return report
    }

    /// The last scrub's report (running or finished), nil before the first.
    public var lastReport: ScrubReport? { reports.withLock { $0 } }

    /// The whole scrub, synchronously (the job thread; tests).
    func run(volumeIDs: [UInt64], job: UInt64) throws -> ScrubReport {
        var report = ScrubReport(job: job, finished: false)
        var examined: UInt64 = 0
        for id in volumeIDs {
            let chunks = pool.monitor.withLock {
                pool.state.volumes[id].map { $0.present.chunks(in: 0..<UInt64.max) } ?? []
            }
            // The next batch is being read ahead while this one is verified: one 64 KiB read at a time
            // would leave the disk idle between them.
            var batchStart = 0
            var next = prefetchBatch(volumeID: id, chunks: chunks[0..<min(chunks.count, Self.readAheadChunks)])
            while batchStart < chunks.count {
                let current = next
                let nextStart = batchStart + current.chunks.count
                next = prefetchBatch(
                    volumeID: id, chunks: chunks[nextStart..<min(chunks.count, nextStart + Self.readAheadChunks)])
                for (chunk, versions) in current.chunks {
                    if pool.jobs.isCancelled(job) { throw EngineError(.closed, "scrub cancelled") }
                    examined += 1
                    if examined % 256 == 0 {
                        pool.jobs.progress(job, done: examined)
                        reports.withLock { $0 = report }
                    }
                    for version in versions where version.hasSlot {
                        try verify(
                            version, volumeID: id, chunk: chunk, chunkSize: current.chunkSize, files: current.files,
                            into: &report)
                    }
                }
                batchStart = nextStart
            }
        }
        pool.jobs.progress(job, done: examined)
        report.finished = true
        reports.withLock { $0 = report }
        pool.logger.log(
            level: report.damage.isEmpty ? .info : .error, "scrub finished",
            metadata: ["verified_bytes": "\(report.verifiedBytes)", "damaged_blocks": "\(report.damage.count)"])
        return report
    }

    /// Chunks whose slots a scrub asks the kernel to read ahead of the one it verifies (2 MiB of 64 KiB
    /// chunks).
    public static let readAheadChunks = 32

    /// The versions of `chunks` (as they are now) with their slot data's reads started.
    private func prefetchBatch(volumeID: UInt64, chunks: ArraySlice<UInt64>)
        -> (chunks: [(UInt64, [ChunkVersion])], chunkSize: UInt32, files: [UInt16: any StorageFile])
    {
        let (batch, chunkSize, slotFiles) = pool.monitor.withLock {
            () -> ([(UInt64, [ChunkVersion])], UInt32, [UInt16: any StorageFile]) in
            let volume = pool.state.volumes[volumeID]
            let batch = chunks.map { ($0, volume?.map[$0]?.versions ?? []) }
            return (batch, volume?.geometry.chunkSize ?? 0, pool.files)
        }
        for (_, versions) in batch {
            for version in versions where version.hasSlot {
                slotFiles[version.slot.file]?.prefetch(
                    at: version.slot.index * UInt64(chunkSize), length: UInt64(chunkSize))
            }
        }
        return (batch, chunkSize, slotFiles)
    }

    private func verify(
        _ version: ChunkVersion, volumeID: UInt64, chunk: UInt64, chunkSize: UInt32, files: [UInt16: any StorageFile],
        into report: inout ScrubReport
    ) throws {
        guard let file = Pool.checksummedFiles([files[version.slot.file]].compactMap { $0 }).first else { return }
        let geometry = try ChunkGeometry(chunkSize: chunkSize)
        let sub = UInt64(geometry.subBlockSize)
        let slotStart = version.slot.index * UInt64(chunkSize)
        try version.dataMask.forEachRun { first, count in
            let offset = slotStart + UInt64(first) * sub
            let length = UInt64(count) * sub
            let result: (damaged: [UInt64], unchecked: Int)
            do {
                result = try file.damagedBlocks(at: offset, length: Int(length))
            } catch {
                throw EngineError.io("scrubbing slot \(version.slot)", error)
            }
            report.verifiedBytes += length - UInt64(result.unchecked) * ChecksumLayout.blockSize
            report.uncheckedBytes += UInt64(result.unchecked) * ChecksumLayout.blockSize
            for fileOffset in result.damaged where report.damage.count < ScrubReport.maximumDamageListed {
                if let damage = describeDamage(
                    version, volumeID: volumeID, chunk: chunk, offsetInChunk: fileOffset - slotStart, geometry: geometry)
                {
                    report.damage.append(damage)
                }
            }
        }
    }

    /// Who reads a damaged block of `version`: the live volume and/or which snapshots (nil when the
    /// version is gone by now: nobody reads it any more).
    private func describeDamage(
        _ version: ChunkVersion, volumeID: UInt64, chunk: UInt64, offsetInChunk: UInt64, geometry: ChunkGeometry
    ) -> ScrubDamage? {
        pool.monitor.withLock {
            guard let volume = pool.state.volumes[volumeID], volume.map[chunk]?.versions.contains(version) == true
            else {
                return nil
            }
            let bit = UInt64(1) << (offsetInChunk / UInt64(geometry.subBlockSize))
            let live = pool.state.resolve(volume, chunk, wanted: bit).slot(for: bit) == version.slot
            let snapshots = volume.snapshots.filter {
                pool.state.resolve(volume, chunk, epoch: $0.epoch, wanted: bit).slot(for: bit) == version.slot
            }
            return ScrubDamage(
                volume: volume.record.name, offset: geometry.start(of: chunk) + offsetInChunk,
                length: ChecksumLayout.blockSize, live: live, snapshots: snapshots.map(\.name), slot: version.slot)
        }
    }
}
