import CairnEngine
import CairnIO
import Foundation
import Logging
import MirrorProtocol
import NIOCore
import Synchronization

extension PrimaryMirror {
    /// Starts online verify (DRBD's `verify`): every extent's SHA-256 is compared on both sides, under the
    /// overlap gate so no write to it is in flight meanwhile. Extents that differ become dirty and a resync
    /// copies them. Needs the mirror linked.
    func startVerify() throws -> UInt64 {
        try state.withLock { s -> UInt64 in
            guard feed(.verifyRequested, reason: nil, &s).contains(.startVerify) else {
                throw ReplicationError(
                    .wrongState, "verify needs the mirror in sync (it is \(s.record.state.rawValue)\(s.resync == nil ? "" : ", resyncing"))")
            }
            let id = pool.jobs.start(
                kind: "mirror-verify", target: "\(s.record.volumeID)→\(s.record.target)", total: changeMap.extentCount,
                unit: "extents")
            s.jobID = id
            s.resync = Task { await self.runVerify(job: id) }
            return id
        }
    }

    func runVerify(job: UInt64) async {
        let jobs = pool.jobs
        let epoch = linkState.epoch
        let count = changeMap.extentCount
        do {
            var found: [UInt64] = []
            var next: UInt64 = 0
            var done: UInt64 = 0
            try await withThrowingTaskGroup(of: (UInt64, Bool).self) { group in
                while next < count && next < UInt64(ReplicationSettings.resyncConcurrency) {
                    let extent = next
                    group.addTask { (extent, try await self.extentMatches(extent)) }
                    next += 1
                }
                while let (extent, matches) = try await group.next() {
                    if !matches { found.append(extent) }
                    done += 1
                    if done % 16 == 0 { jobs.progress(job, done: done) }
                    if jobs.isCancelled(job) { throw CancellationError() }
                    if next < count {
                        let extent = next
                        group.addTask { (extent, try await self.extentMatches(extent)) }
                        next += 1
                    }
                }
            }
            jobs.progress(job, done: done)
            state.withLock { s in
                s.resync = nil
                _ = feed(.jobEnded, reason: nil, &s)
            }
            if found.isEmpty {
                jobs.finish(job, .succeeded, message: "all \(count) extents equal on both sides")
                logger.info("mirror verified", metadata: ["volume": "\(volumeID)", "extents": "\(count)"])
            } else {
                changeMap.markDirty(found)
                try await changeMap.makeDurable()
                jobs.finish(job, .succeeded, message: "\(found.count) of \(count) extents differed; a resync copies them")
                logger.error("mirror verify found differences", metadata: ["volume": "\(volumeID)", "extents": "\(found.count)"])
                scheduleResync(reason: "verify found \(found.count) differing extents")
            }
        } catch {
            let cancelled = error is CancellationError
            let reason = (error as? TargetUnavailable)?.reason ?? "\(error)"
            let actions = state.withLock { s in
                s.resync = nil
                return feed(.jobFailed(epoch: epoch, cancelled: cancelled), reason: reason, &s)
            }
            if cancelled {
                jobs.finish(job, .cancelled, message: "verify cancelled")
            } else {
                if actions.contains(.recordFracture) { await recordFracture(reason) }
                jobs.finish(job, .failed, message: reason)
            }
        }
    }

    /// Compares one extent's digests (local and the target's) with no write to it in flight.
    func extentMatches(_ extent: UInt64) async throws -> Bool {
        guard let range = try byteRange(ofExtent: extent) else { return true }
        return try await gate.withRange(range) { try await digestsMatch(range) }
    }

    /// The bytes change-map extent `extent` covers in the volume: nil past its end, short at its end.
    func byteRange(ofExtent extent: UInt64) throws -> Range<UInt64>? {
        let size = try pool.volumes.size(volumeID: volumeID)
        let start = extent * changeMap.extentSize
        guard start < size else { return nil }
        return start..<(start + min(changeMap.extentSize, size - start))
    }

    /// Whether the target's digest of `range` equals the primary's: the target's `checksum` frame is in
    /// flight while the local digest is computed. The caller holds `range` in the overlap gate.
    func digestsMatch(_ range: Range<UInt64>) async throws -> Bool {
        let pool = self.pool
        let volume = volumeID
        let (start, length) = (range.lowerBound, UInt64(range.count))
        let handle = state.withLock { $0.handle }
        async let remote = send(.checksum, payload: MirrorRange(handle: handle, offset: start, length: length).payload)
        let local = try await executor.run {
            try ExtentDigest.compute(pool: pool, volumeID: volume, offset: start, length: length)
        }
        let reply = try await remote
        return reply.payload.getBytes(at: reply.payload.readerIndex, length: reply.payload.readableBytes) == local
    }
}
