import CairnEngine
import CairnIO
import Foundation
import Logging
import MirrorProtocol
import NIOCore
import Synchronization

/// `re-establish --take-target-changes`: the resync runs target → primary first (DRBD's SyncTarget role),
/// then the usual primary → target resync.
///
/// The **pull set** (`mirrors/primary-<id>.pull`, a `ChangeMap` file with the primary's extent size) is
/// the union of the target's change map (what hosts wrote there while it was severed or promoted) and the
/// primary's own change map (what the primary wrote meanwhile: the target's bytes replace them too). It is
/// written durably before the first extent is pulled, so a primary crash resumes the pull where it stopped
/// and never widens it.
///
/// Ordering with host writes on the primary: each extent is pulled under the overlap gate (read from the
/// target, written here), so a host write to it either finished before (it was mirrored: the target holds
/// it and the pull copies it back unchanged) or waits and lands after. A host write the target does *not*
/// get (the link failed) to an extent not yet pulled would be overwritten by the target's older bytes when
/// the pull resumes, so it is failed instead of acknowledged (`refusesUntracked`).
extension PrimaryMirror {
    /// The pull set while a take-target-changes is under way.
    var pullMap: ChangeMap? { state.withLock { $0.pullMap } }

    /// Mirrors of this process with a pull set: the host read path asks `needsPull` only while this is
    /// above zero, so reads cost nothing extra when no take is under way (the usual case).
    static let pullsPending = Atomic<Int>(0)

    /// Whether any pull is under way in this process (one atomic load).
    public static var anyPullPending: Bool { pullsPending.load(ordering: .relaxed) > 0 }

    /// Installs or drops the pull set, keeping `pullsPending` in step.
    func setPullMap(_ map: ChangeMap?) {
        let change = state.withLock { s -> Int in
            defer { s.pullMap = map }
            return (map == nil ? 0 : 1) - (s.pullMap == nil ? 0 : 1)
        }
        if change != 0 { Self.pullsPending.add(change, ordering: .relaxed) }
    }

    /// A host read of a range some of whose extents are still to be taken from the target.
    public func needsPull(offset: UInt64, length: UInt64) -> Bool {
        guard let pull = pullMap else { return false }
        return pull.containsDirty(changeMap.extents(offset: offset, length: length))
    }

    /// Before a host read of extents not yet taken (DRBD serves such reads from the peer): they are pulled
    /// now, committed, and dropped from the pull set, so the read sees the target's bytes, not the
    /// primary's stale ones. With the target unreachable the read fails rather than return stale data.
    public func pullOnDemand(offset: UInt64, length: UInt64) async throws {
        guard let pull = pullMap else { return }
        let needed = changeMap.extents(offset: offset, length: length).filter { pull.containsDirty($0...$0) }
        guard !needed.isEmpty else { return }
        guard isLinked else {
            throw ReplicationError(
                .wrongState,
                "this volume is taking the target's changes and the target is unreachable: the extents read are not yet copied back; `cairn mirror re-establish` resumes the copy")
        }
        for extent in needed { try await pullExtent(extent, paced: false) }
        let pool = self.pool
        try await executor.run { try pool.flush() }
        pull.clearDirty(needed, copiedSince: .max)
        try await pull.makeDurable()
    }

    /// Builds the pull set (unless a pull is being resumed): the target's change map converted to this
    /// map's extents, plus the primary's own changed extents. Durable before it returns.
    func preparePull() async throws {
        if pullMap != nil { return }
        let handle = state.withLock { $0.handle }
        let reply = try await send(.targetChanges, payload: MirrorHandleValue(handle: handle).payload)
        let changes = try MirrorTargetChanges.decode(payload: reply.payload)
        let store = self.store
        let executor = self.executor
        let volume = volumeID
        let size = try pool.volumes.size(volumeID: volume)
        let extentSize = changeMap.extentSize
        let pull = try await executor.run {
            try ChangeMap.create(path: store.pullMapPath(volume), executor: executor, extentSize: extentSize, volumeSize: size)
        }
        for extent in changes.extents {
            let start = extent * changes.extentSize
            guard start < size else { continue }
            pull.markDirty(pull.extents(offset: start, length: min(changes.extentSize, size - start)))
        }
        // Every bit set in the primary's map, dirty or active: the target's bytes win there too.
        pull.markDirty(changeMap.changedExtents())
        try await pull.makeDurable()
        setPullMap(pull)
        logger.notice(
            "taking the target's changes",
            metadata: [
                "volume": "\(volume)", "target-extents": "\(changes.extents.count)", "pull-extents": "\(pull.dirtyCount)",
            ])
    }

    /// Copies the pull set from the target, in batches: after each batch the primary commits, then the
    /// batch's bits are cleared durably. When the set is empty the target is told (`synchronized` at the
    /// generation both already agreed on), drops its change map, and the pull set goes.
    func runPull(job: UInt64) async throws -> UInt64 {
        // Chosen, but stopped (a crash) before the pull set was written: build it now, or the resync that
        // follows would overwrite the target's changes and then tell it to forget them.
        if pullMap == nil && record.takingTargetChanges == true { try await preparePull() }
        guard let pull = pullMap else { return 0 }
        let jobs = pool.jobs
        let local = self.pool
        var done: UInt64 = 0
        jobs.progress(job, done: 0, total: pull.dirtyCount)
        while true {
            guard isLinked else { throw TargetUnavailable(reason: record.lastError ?? "the mirror fractured") }
            if jobs.isCancelled(job) { throw CancellationError() }
            let clock = changeMap.dirtyClock
            let batch = pull.dirtyExtents(limit: ReplicationSettings.resyncBatch)
            if batch.isEmpty { break }
            let connection = connectionSerial
            try await withThrowingTaskGroup(of: Void.self) { group in
                var pending = batch[...]
                for _ in 0..<ReplicationSettings.resyncConcurrency {
                    guard let extent = pending.popFirst() else { break }
                    group.addTask { try await self.pullExtent(extent) }
                }
                while try await group.next() != nil {
                    guard let extent = pending.popFirst() else { continue }
                    group.addTask { try await self.pullExtent(extent) }
                }
            }
            // Both sides durable before a bit is cleared (the pull read the target's page cache).
            try await executor.run { try local.flush() }
            try await flushTarget()
            pull.clearDirty(batch, copiedSince: .max)
            try await pull.makeDurable()
            // Equal on both sides now, unless a write the target missed set the bit again meanwhile, or
            // the target restarted during the batch and lost what was read from its page cache (the
            // primary keeps it; the resync that follows sends it back).
            if connectionSerial == connection {
                changeMap.clearDirty(batch, copiedSince: clock)
                try await changeMap.makeDurable()
            }
            done += UInt64(batch.count)
            jobs.progress(job, done: done, total: done + pull.dirtyCount)
        }
        let handle = state.withLock { $0.handle }
        _ = try await send(.synchronized, payload: MirrorHandleValue(handle: handle, value: record.generations.synced).payload)
        try await update { $0.takingTargetChanges = nil }
        setPullMap(nil)
        let store = self.store
        let volume = volumeID
        try await executor.run { try store.remove(store.pullMapPath(volume)) }
        logger.info("took the target's changes", metadata: ["volume": "\(volume)", "extents": "\(done)"])
        return done
    }

    /// Reads one extent from the target and writes it here, under the overlap gate. `paced`: the resync
    /// rate limit applies (not to a host read waiting for the extent).
    func pullExtent(_ extent: UInt64, paced: Bool = true) async throws {
        let pool = self.pool
        let volume = volumeID
        let size = try pool.volumes.size(volumeID: volume)
        let start = extent * changeMap.extentSize
        guard start < size else { return }
        let length = min(changeMap.extentSize, size - start)
        let frameSize = UInt64(state.withLock { $0.record.frameSize })
        try await gate.withRange(start..<(start + length)) {
            var position = start
            while position < start + length {
                let piece = min(frameSize, start + length - position)
                let handle = state.withLock { $0.handle }
                let reply = try await send(.read, payload: MirrorRange(handle: handle, offset: position, length: piece).payload)
                let data = reply.payload
                guard UInt64(data.readableBytes) == piece else {
                    throw TargetUnavailable(reason: "the target answered a \(piece)-byte read with \(data.readableBytes) bytes")
                }
                let at = position
                // The rate limit's pause, between the target's bytes and their local write: the window a host
                // write must not fall into (the overlap gate keeps it out; the tests rely on the pause).
                if paced && settings.resyncExtentDelay > 0 && position == start {
                    try await Task.sleep(nanoseconds: UInt64(settings.resyncExtentDelay * 1e9))
                }
                try await executor.run {
                    try data.withUnsafeReadableBytes { bytes in
                        try pool.write(volumeID: volume, offset: at, source: .bytes(bytes), fua: false)
                    }
                }
                position += piece
            }
        }
    }

    /// A host write the target will not get, to extents the pull has not copied yet: the pull would later
    /// overwrite it with the target's older bytes, so it must not be acknowledged.
    func refusesUntracked(_ extents: ClosedRange<UInt64>) -> Bool {
        guard let pull = pullMap else { return false }
        return pull.containsDirty(extents)
    }

    /// The error such a write fails with.
    var untrackedWriteError: ReplicationError {
        ReplicationError(
            .wrongState,
            "this volume is taking the target's changes and the target is unreachable: a write to an extent not yet copied back would be lost; `cairn mirror re-establish` resumes the copy")
    }
}
