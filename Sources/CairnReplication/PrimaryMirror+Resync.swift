import CairnEngine
import CairnIO
import Foundation
import Logging
import MirrorProtocol
import NIOCore
import Synchronization

extension PrimaryMirror {
    /// Starts the resync job unless one runs: the mirror becomes `synchronizing` (host writes are mirrored
    /// meanwhile) and the change map's dirty extents are copied to the target.
    func scheduleResync(reason: String) {
        let started = state.withLock { s in feed(.resyncNeeded, reason: nil, &s).contains(.startResync) }
        if started { logger.info("mirror resync started", metadata: ["volume": "\(volumeID)", "reason": "\(reason)"]) }
    }

    /// Starts the resync job the link machine asked for. Under the state lock.
    func startResyncJob(_ s: inout State) {
        let id = pool.jobs.start(
            kind: "mirror-sync", target: "\(s.record.volumeID)→\(s.record.target)", total: 0, unit: "extents")
        s.jobID = id
        s.resync = Task { await self.runResync(job: id) }
    }

    /// The resync job: copies dirty extents in batches; after each batch the target and the primary
    /// flush and only then are the batch's bits cleared (durably), so an interrupted resync resumes where
    /// it stopped and never
    /// forgets an extent the target does not durably hold.
    func runResync(job: UInt64) async {
        let jobs = pool.jobs
        let epoch = linkState.epoch
        do {
            // Durably synchronizing (as the link machine left the record, unless a failure came first).
            try await update(state: { _ in })
            let generation = record.generations.current
            // Taking the target's changes: target → primary first.
            let pulled = try await runPull(job: job)
            // DRBD's csums-alg: compare digests first, send only extents that differ (this resync only).
            let compare = state.withLock { s -> Bool in
                defer { s.checksumResync = false }
                return s.checksumResync
            }
            var done: UInt64 = 0
            var skipped: UInt64 = 0
            jobs.progress(job, done: 0, total: changeMap.dirtyCount)
            while true {
                guard isLinked else { throw TargetUnavailable(reason: record.lastError ?? "the mirror fractured") }
                if jobs.isCancelled(job) { throw CancellationError() }
                let clock = changeMap.dirtyClock
                let batch = changeMap.dirtyExtents(limit: ReplicationSettings.resyncBatch)
                if batch.isEmpty { break }
                let connection = connectionSerial
                try await withThrowingTaskGroup(of: Bool.self) { group in
                    var pending = batch[...]
                    for _ in 0..<ReplicationSettings.resyncConcurrency {
                        guard let extent = pending.popFirst() else { break }
                        group.addTask { try await self.copyExtent(extent, compareFirst: compare) }
                    }
                    while let sent = try await group.next() {
                        if !sent { skipped += 1 }
                        guard let extent = pending.popFirst() else { continue }
                        group.addTask { try await self.copyExtent(extent, compareFirst: compare) }
                    }
                }
                // Both sides durable before a bit is cleared: the copy read the primary's page cache, so
                // without the primary's own flush a power cut there could leave the target newer than
                // the primary while the map says the extent is clean.
                try await flushTarget()
                let pool = self.pool
                try await executor.run { try pool.flush() }
                // A flush answered on a newer connection may follow a target restart that lost the
                // batch's unsynced copies: it vouches for nothing sent before it, so the batch goes again.
                guard connectionSerial == connection else { continue }
                changeMap.clearDirty(batch, copiedSince: clock)
                try await changeMap.makeDurable()
                done += UInt64(batch.count)
                jobs.progress(job, done: done, total: done + changeMap.dirtyCount)
            }
            // Recorded before the mirror can show "mirrored", so whoever sees that also sees this result.
            let result = ResyncResult(compared: compare ? done : 0, sent: done - skipped, skipped: skipped, pulled: pulled)
            state.withLock { $0.lastResync = result }
            // Both sides are equal at `generation` only if nothing fractured meanwhile.
            let handle = state.withLock { $0.handle }
            _ = try await send(.synchronized, payload: MirrorHandleValue(handle: handle, value: generation).payload)
            let map = changeMap
            try await update(state: { s in
                s.record.generations.synced = generation
                // In sync only with no dirty extent left (one may have appeared since the last batch).
                let inSync = s.record.generations.current == generation && map.dirtyCount == 0
                feed(.resyncCompleted(inSync: inSync), reason: nil, &s)
            })
            // Still synchronizing (extents changed meanwhile): the machine starts the next pass.
            let again = state.withLock { s -> Bool in
                s.resync = nil
                s.targetFresh = false
                return feed(.jobEnded, reason: nil, &s).contains(.startResync)
            }
            var message = compare
                ? "\(done) extents compared, \(done - skipped) sent, \(skipped) skipped (equal digests)"
                : "\(done) extents copied"
            if pulled > 0 { message = "\(pulled) extents taken from the target; " + message }
            jobs.finish(job, .succeeded, message: message)
            if again {
                logger.info(
                    "mirror resync started",
                    metadata: ["volume": "\(volumeID)", "reason": "extents changed during the resync"])
            } else {
                logger.info("mirror in sync", metadata: ["volume": "\(volumeID)", "extents": "\(done)"])
            }
        } catch {
            let cancelled = error is CancellationError
            let reason =
                cancelled
                ? "resync cancelled by the operator; re-establish resumes it"
                : (error as? TargetUnavailable)?.reason ?? "\(error)"
            // A failure of an older link's resync, or one during shutdown, changes nothing (the machine's epoch).
            let (actions, stopping) = state.withLock { s in
                s.resync = nil
                let actions = feed(.jobFailed(epoch: epoch, cancelled: cancelled), reason: reason, &s)
                return (actions, s.link.lifecycle != .running)
            }
            if stopping {
                jobs.finish(job, .cancelled, message: "the daemon stopped; the resync resumes at the next start")
            } else if cancelled {
                if actions.contains(.recordPause) { await recordDivergence(call: "recording the mirror pause") }
                jobs.finish(job, .cancelled, message: "cancelled; `cairn mirror re-establish` resumes it")
            } else {
                if actions.contains(.recordFracture) { await recordFracture(reason) }
                jobs.finish(job, .failed, message: reason)
            }
        }
    }

    /// Stops linking without an error (a cancelled resync, a sever): like a fracture, but not alerted.
    func pause(_ reason: String?, as final: PrimaryMirrorRecord.State = .fractured) async {
        state.withLock { s in _ = feed(.paused(as: final), reason: reason, &s) }
        await recordDivergence(call: "recording the mirror pause")
    }

    /// Copies one extent under the overlap gate (no host write to it runs meanwhile): data as write
    /// frames, holes as zeroing frames (skipped on a target created empty by this establish).
    /// `compareFirst` (`--checksum`): the target's digest of the extent is asked for first (one `checksum`
    /// frame, in flight with the local digest's computation) and nothing is sent when it equals the
    /// primary's. Returns whether data was sent.
    @discardableResult
    func copyExtent(_ extent: UInt64, compareFirst: Bool = false) async throws -> Bool {
        let pool = self.pool
        let volume = volumeID
        guard let range = try byteRange(ofExtent: extent) else { return false }
        let (start, length) = (range.lowerBound, UInt64(range.count))
        let fresh = state.withLock { $0.targetFresh }
        if settings.resyncExtentDelay > 0 { try await Task.sleep(nanoseconds: UInt64(settings.resyncExtentDelay * 1e9)) }
        return try await gate.withRange(range) {
            // A checksum frame covers at most the largest frame; bigger extents are sent whole.
            if compareFirst && length <= UInt64(MirrorLimits.maximumFrameSize), try await digestsMatch(range) {
                return false
            }
            let (buffer, extents) = try await executor.run { () -> (ByteBuffer, [ReadExtent]) in
                var buffer = ByteBufferAllocator().buffer(capacity: Int(length))
                var extents: [ReadExtent] = []
                try buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: Int(length)) { raw in
                    extents = try pool.read(
                        volumeID: volume, offset: start, into: UnsafeMutableRawBufferPointer(rebasing: raw[0..<Int(length)]))
                    return Int(length)
                }
                return (buffer, extents)
            }
            for segment in extents {
                if segment.isHole {
                    if !fresh {
                        try await sendRange(.writeZeroes, offset: segment.offset, length: segment.length, flags: .punch)
                    }
                } else {
                    let slice = buffer.getSlice(at: Int(segment.offset - start), length: Int(segment.length))!
                    try await sendData(offset: segment.offset, data: slice, flags: [])
                }
            }
            return true
        }
    }

    /// Activity-log checkpoints while linked: both sides flush, then the extents idle since the
    /// checkpoint began are cleared from the change map. Runs until the task is cancelled.
    func runCheckpoints() async {
        while !Task.isCancelled {
            try? await Task.sleep(nanoseconds: UInt64(settings.checkpointInterval * 1_000_000_000))
            sampleThroughput()
            let (linked, epoch) = linkState
            guard linked, changeMap.changedCount > changeMap.dirtyCount else { continue }
            let start = changeMap.checkpointBegin()
            let pool = self.pool
            do {
                try await executor.run { try pool.flush() }
                try await flushTarget()
                try await changeMap.clearIdle(start)
            } catch let error as TargetUnavailable {
                await fracture(error.reason, epoch: epoch)
            } catch {
                logger.warning("mirror checkpoint failed", metadata: ["error": "\(error)"])
            }
        }
    }
}
