import CairnBackup
import CairnEngine
import CairnIO
import CairnReplication
import NBDProtocol
import NBDServer
import NIOCore
import Prometheus

/// One NBD session's view of a volume (read-write) or of one of its snapshots (read-only, exported as
/// `volume@snapshot`): every call runs the blocking engine operation on the I/O executor and completes
/// its future back on the connection's event loop.
final class VolumeExport: NBDExport {
    let pool: Pool
    let executor: IOExecutor
    let volumeID: UInt64
    let name: String
    /// The snapshot this export reads, or nil for the live volume.
    let snapshotEpoch: UInt32?
    /// Size of the snapshot (a snapshot's size never changes).
    let snapshotSize: UInt64

    /// Block sizes: 512-byte sectors are the smallest unit (volume sizes are whole sectors); 4 KiB is a
    /// sub-block, below which a write into unwritten space pads; 32 MiB is the NBD payload convention
    /// (qemu's NBD_MAX_BUFFER_SIZE, nbdkit's default).
    static let blockSizes = NBDBlockSizeConstraints(minimum: 512, preferred: 4096, maximumPayload: 32 << 20)
    static let allocationContext = "base:allocation"
    /// qemu's naming for a dirty bitmap context; qemu-img and `nbdinfo --map=CONTEXT` read it. Here the
    /// bitmap named after a snapshot marks what changed since that snapshot.
    static let dirtyBitmapPrefix = "qemu:dirty-bitmap:"
    /// NBD_STATE_DIRTY: the extent changed.
    static let dirtyFlag: UInt32 = 1
    /// NBD_STATE_HOLE | NBD_STATE_ZERO: unallocated, reads as zeros.
    static let holeFlags: UInt32 = 3

    /// Completions go back to event loops in batches (shared by every export of the daemon).
    let batchers: CompletionBatchers
    /// Request counters and latencies of this export name.
    let metrics: ExportMetrics
    /// The session's backup routing (live volumes only; nil for snapshots and tests).
    let backupRoute: BackupRouting?

    init(
        pool: Pool, executor: IOExecutor, batchers: CompletionBatchers, metrics: ExportMetrics, volumeID: UInt64,
        name: String, snapshotEpoch: UInt32? = nil, snapshotSize: UInt64 = 0, readOnlyGrant: Bool = false,
        requiresTLS: Bool = false, replication: Replication? = nil, backupRoute: BackupRouting? = nil
    ) {
        self.replication = replication
        self.backupRoute = backupRoute
        self.readOnlyGrant = readOnlyGrant
        self.requiresTLS = requiresTLS
        self.metrics = metrics
        self.pool = pool
        self.executor = executor
        self.batchers = batchers
        self.volumeID = volumeID
        self.name = name
        self.snapshotEpoch = snapshotEpoch
        self.snapshotSize = snapshotSize
    }

    /// The same export, read-only for this session.
    func grantedReadOnly() -> VolumeExport {
        VolumeExport(
            pool: pool, executor: executor, batchers: batchers, metrics: metrics, volumeID: volumeID, name: name,
            snapshotEpoch: snapshotEpoch, snapshotSize: snapshotSize, readOnlyGrant: true, requiresTLS: requiresTLS,
            replication: replication, backupRoute: backupRoute)
    }

    /// Remote mirrors (VolumeExport+Mirror.swift): a mirrored volume's writes go through its mirror.
    let replication: Replication?

    /// Descriptions for NBD_INFO_DESCRIPTION and NBD_OPT_LIST (the same in both places).
    static let volumeDescription = "cairn volume"
    static let snapshotDescription = "cairn snapshot (read-only)"

    var exportDescription: String? { snapshotEpoch == nil ? Self.volumeDescription : Self.snapshotDescription }
    var size: UInt64 { snapshotEpoch == nil ? ((try? pool.volumes.size(volumeID: volumeID)) ?? 0) : snapshotSize }
    var capabilities: NBDExportCapabilities {
        snapshotEpoch == nil && !readOnlyGrant
            ? [.flush, .fua, .trim, .writeZeroes, .fastZero, .cache, .multiConnection, .blockStatus, .copyAndWrite]
            : [.readOnly, .cache, .multiConnection, .blockStatus]
    }
    /// The session was granted read-only access to a live volume (an access rule).
    let readOnlyGrant: Bool
    /// Reachable only after STARTTLS (selective TLS, `tls.exports`).
    let requiresTLS: Bool
    var blockSizes: NBDBlockSizeConstraints { Self.blockSizes }
    /// base:allocation, plus one dirty bitmap per older snapshot (changes since it). The server adds
    /// `x-cairn:copy-on-write` for live volumes (the `copyAndWrite` capability).
    var metaContexts: [String] {
        let older = pool.snapshots.epochs(volumeID: volumeID).filter { $0.epoch < (snapshotEpoch ?? .max) }
        return [Self.allocationContext] + older.map { Self.dirtyBitmapPrefix + $0.name }
    }

    /// Counts `future`'s request when it completes (started at `start`); `bytes` on success.
    private func measured<T>(
        _ operation: ExportMetrics.Operation, since start: ContinuousClock.Instant, bytes: Counter? = nil,
        length: UInt64 = 0, _ future: EventLoopFuture<T>
    ) -> EventLoopFuture<T> {
        let metrics = self.metrics
        future.whenComplete { result in
            if case .success = result { bytes?.increment(by: Int64(length)) }
            metrics.record(operation, since: start, failed: { if case .failure = result { true } else { false } }())
        }
        return future
    }

    /// Runs `work` on the I/O executor; its result or error completes a future on `eventLoop`. `writing`:
    /// the command writes, so a range past the end is ENOSPC (the spec's SHOULD), not EINVAL.
    func run<T: Sendable>(
        on eventLoop: any EventLoop, writing: Bool = false, _ work: @escaping @Sendable () throws -> T
    ) -> EventLoopFuture<T> {
        let promise = eventLoop.makePromise(of: T.self)
        let batcher = batchers.batcher(for: eventLoop)
        do {
            try executor.submit {
                let result = Result { try work() }.mapError { Self.wireError($0, writing: writing) as any Error }
                batcher.complete { promise.completeWith(result) }
            }
        } catch {
            promise.fail(Self.wireError(error))
        }
        return promise.futureResult
    }

    func read(offset: UInt64, length: UInt32, eventLoop: any EventLoop) -> EventLoopFuture<[NBDReadSegment]> {
        if let waiting = readAfterPull(offset: offset, length: length, eventLoop: eventLoop) { return waiting }
        let start = ContinuousClock.now
        let pool = self.pool
        let volumeID = self.volumeID
        let epoch = snapshotEpoch
        let routing = backupRoute
        return measured(.read, since: start, bytes: metrics.bytesRead, length: UInt64(length), run(on: eventLoop) {
            var buffer = ByteBufferAllocator().buffer(capacity: Int(length))
            var extents: [ReadExtent] = []
            try buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: Int(length)) { raw in
                let target = UnsafeMutableRawBufferPointer(rebasing: raw[0..<Int(length)])
                extents = try BackupRouting.read(routing, offset: offset, into: target) {
                    try pool.read(volumeID: volumeID, snapshotEpoch: epoch, offset: offset, into: target)
                }
                return Int(length)
            }
            return Self.segments(extents, buffer: buffer, offset: offset)
        })
    }

    /// Reads of data in the page cache are served on the event loop: `readIfCached` never blocks (no chunk
    /// lock waits, RWF_NOWAIT). Anything else returns nil and goes through the I/O threads.
    func readImmediately(offset: UInt64, length: UInt32) -> [NBDReadSegment]? {
        guard length <= Self.immediateReadLimit, backupRoute?.isActive != true else { return nil }
        // Extents still to be taken from a mirror target are pulled first (`readAfterPull`).
        if mirrorToPullFrom(offset: offset, length: length) != nil { return nil }
        let start = ContinuousClock.now
        var buffer = ByteBufferAllocator().buffer(capacity: Int(length))
        var extents: [ReadExtent]?
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: Int(length)) { raw in
            let target = UnsafeMutableRawBufferPointer(rebasing: raw[0..<Int(length)])
            extents = try? pool.readIfCached(volumeID: volumeID, snapshotEpoch: snapshotEpoch, offset: offset, into: target)
            return extents == nil ? 0 : Int(length)
        }
        guard let extents else { return nil }
        metrics.bytesRead.increment(by: Int64(length))
        metrics.record(.read, since: start)
        return Self.segments(extents, buffer: buffer, offset: offset)
    }

    /// Largest read answered on the event loop: copying more than this from the page cache would hold the
    /// loop (and every other connection on it) for too long.
    static let immediateReadLimit: UInt32 = 256 << 10

    static func segments(_ extents: [ReadExtent], buffer: ByteBuffer, offset: UInt64) -> [NBDReadSegment] {
        extents.map { extent in
            if extent.isHole { return .hole(offset: extent.offset, length: UInt32(extent.length)) }
            return .data(offset: extent.offset, data: buffer.getSlice(at: Int(extent.offset - offset), length: Int(extent.length))!)
        }
    }

    func write(offset: UInt64, data: ByteBuffer, fua: Bool, eventLoop: any EventLoop) -> EventLoopFuture<Void> {
        let start = ContinuousClock.now
        if !fua, let done = writeImmediately(offset: offset, data: data) {
            return measured(
                .write, since: start, bytes: metrics.bytesWritten, length: UInt64(data.readableBytes),
                eventLoop.makeCompletedFuture(done))
        }
        let pool = self.pool
        let volumeID = self.volumeID
        let replication = self.replication
        let routing = backupRoute
        let local: @Sendable () -> EventLoopFuture<Void> = { self.run(on: eventLoop, writing: true) {
            try replication?.target.beforeHostWrite(volumeID: volumeID, offset: offset, length: UInt64(data.readableBytes))
            return try data.withUnsafeReadableBytes { bytes in
                try BackupRouting.write(routing, offset: offset, source: .bytes(bytes), fua: fua) {
                    try pool.writeDeferringCommit(volumeID: volumeID, offset: offset, source: .bytes(bytes), fua: fua)
                }
            }
        }.flatMap { needsCommit in
            // FUA that changed metadata: the reply waits for a group commit, but no I/O thread does.
            needsCommit ? self.commit(eventLoop: eventLoop) : eventLoop.makeSucceededVoidFuture()
        } }
        let written = mirrored(.write(offset: offset, data: data), fua: fua, eventLoop: eventLoop, local) ?? local()
        return measured(.write, since: start, bytes: metrics.bytesWritten, length: UInt64(data.readableBytes), written)
    }

    /// An overwrite the page cache takes at once (`Pool.writeIfImmediate`) is done here on the event loop,
    /// like a cached read: no trip through the I/O threads, whose two wake-ups cost more than the write.
    /// Nil when it would wait, or must pass a mirror or a backup's routing: the caller takes the usual path.
    private func writeImmediately(offset: UInt64, data: ByteBuffer) -> Result<Void, any Error>? {
        guard snapshotEpoch == nil, UInt64(data.readableBytes) <= Pool.maximumImmediateWrite else { return nil }
        if let replication {
            if replication.target.hostWritesNeedBookkeeping(volumeID: volumeID) { return nil }
            // Counted like any unmirrored write, so an `establish` starting now waits for it.
            guard replication.routeWrite(volumeID: volumeID) == nil else { return nil }
        }
        defer { replication?.unmirroredWriteEnded(volumeID: volumeID) }
        let pool = self.pool
        let volumeID = self.volumeID
        do {
            let written = try data.withUnsafeReadableBytes { bytes in
                try BackupRouting.writeIfPlain(backupRoute) {
                    try pool.writeIfImmediate(volumeID: volumeID, offset: offset, bytes: bytes)
                }
            }
            return written == true ? .success(()) : nil
        } catch {
            return .failure(Self.wireError(error, writing: true))
        }
    }

    /// FLUSH: a group commit; the commit thread completes it, no I/O thread waits.
    func flush(eventLoop: any EventLoop) -> EventLoopFuture<Void> {
        let routing = backupRoute
        let pool = self.pool
        let local: @Sendable () -> EventLoopFuture<Void> = {
            // A volume split by a backup may keep durable state outside the pool (the log method's table);
            // otherwise the group commit answers, and no I/O thread waits for it.
            if let routing, routing.flushNeedsMirror {
                return self.run(on: eventLoop) { try BackupRouting.flush(routing) { try pool.flush() } }
            }
            return self.commit(eventLoop: eventLoop)
        }
        return measured(.flush, since: .now, mirroredFlush(eventLoop: eventLoop, local) ?? local())
    }

    private func commit(eventLoop: any EventLoop) -> EventLoopFuture<Void> {
        let promise = eventLoop.makePromise(of: Void.self)
        let batcher = batchers.batcher(for: eventLoop)
        pool.flush { error in
            let result: Result<Void, any Error> = error.map { .failure(Self.wireError($0)) } ?? .success(())
            batcher.complete { promise.completeWith(result) }
        }
        return promise.futureResult
    }

    func trim(offset: UInt64, length: UInt64, fua: Bool, eventLoop: any EventLoop) -> EventLoopFuture<Void> {
        hostChange(.trim, .trim(offset: offset, length: length), offset: offset, length: length, fua: fua, eventLoop: eventLoop) {
            pool, volumeID, routing in
            try BackupRouting.discard(routing, offset: offset, length: length, mode: .trim, fua: fua) {
                try pool.discard(volumeID: volumeID, offset: offset, length: length, mode: .trim, fua: fua)
            }
        }
    }

    /// Both forms are fast here (map changes, or fallocate(ZERO_RANGE)), so FAST_ZERO never fails.
    func writeZeroes(
        offset: UInt64, length: UInt64, punch: Bool, fast: Bool, fua: Bool, eventLoop: any EventLoop
    ) -> EventLoopFuture<Void> {
        let operation = MirrorOperation.writeZeroes(offset: offset, length: length, punch: punch)
        return hostChange(.writeZeroes, operation, offset: offset, length: length, fua: fua, eventLoop: eventLoop) {
            pool, volumeID, routing in
            if punch {
                try BackupRouting.discard(routing, offset: offset, length: length, mode: .zero, fua: fua) {
                    try pool.discard(volumeID: volumeID, offset: offset, length: length, mode: .zero, fua: fua)
                }
            } else {
                let owed = try BackupRouting.write(routing, offset: offset, source: .zeros(length: length), fua: fua) {
                    try pool.write(volumeID: volumeID, offset: offset, source: .zeros(length: length), fua: fua)
                    return false
                }
                if owed { try pool.flush() }
            }
        }
    }

    /// A host change that is not a plain WRITE (TRIM, WRITE_ZEROES, COPY_AND_WRITE): the mirror target's
    /// check, then `change` on the I/O threads with the session's backup routing, mirrored when the volume
    /// has a mirror. `writing`: a range past the end is ENOSPC rather than EINVAL (`wireError`);
    /// `payload`: bytes that crossed the wire, counted as written.
    private func hostChange(
        _ metric: ExportMetrics.Operation, _ operation: MirrorOperation, offset: UInt64, length: UInt64, fua: Bool,
        eventLoop: any EventLoop, writing: Bool = true, payload: UInt64? = nil,
        _ change: @escaping @Sendable (Pool, UInt64, BackupRouting?) throws -> Void
    ) -> EventLoopFuture<Void> {
        let start = ContinuousClock.now
        let pool = self.pool
        let volumeID = self.volumeID
        let replication = self.replication
        let routing = backupRoute
        let local: @Sendable () -> EventLoopFuture<Void> = { self.run(on: eventLoop, writing: writing) {
            try replication?.target.beforeHostWrite(volumeID: volumeID, offset: offset, length: length)
            try change(pool, volumeID, routing)
        } }
        let done = mirrored(operation, fua: fua, eventLoop: eventLoop, local) ?? local()
        guard let payload else { return measured(metric, since: start, done) }
        return measured(metric, since: start, bytes: metrics.bytesWritten, length: payload, done)
    }

    /// CACHE is a hint; the page cache already holds what was recently read or written.
    func cache(offset: UInt64, length: UInt64, eventLoop: any EventLoop) -> EventLoopFuture<Void> {
        metrics.record(.cache, since: .now)
        return eventLoop.makeSucceededVoidFuture()
    }

    func blockStatus(context: String, offset: UInt64, length: UInt64, eventLoop: any EventLoop)
        -> EventLoopFuture<[NBDExtent]>
    {
        blockStatus(context: context, offset: offset, length: length, maximumExtents: nil, eventLoop: eventLoop)
    }

    func blockStatus(
        context: String, offset: UInt64, length: UInt64, maximumExtents: Int?, eventLoop: any EventLoop
    ) -> EventLoopFuture<[NBDExtent]> {
        let start = ContinuousClock.now
        let limit = min(
            maximumExtents ?? SnapshotCatalog.maximumAllocationExtents, SnapshotCatalog.maximumAllocationExtents)
        let pool = self.pool
        let volumeID = self.volumeID
        let epoch = snapshotEpoch
        if context == Self.allocationContext, let routing = backupRoute, routing.isActive {
            // Split by a backup: the session's image (A or B, spread over several volumes) answers. On the
            // I/O threads, since passing the route waits while the backup changes the routing.
            return measured(.blockStatus, since: start, run(on: eventLoop) {
                try BackupRouting.allocation(routing, offset: offset, length: length, maximumExtents: limit) {
                    try pool.snapshots.allocationExtents(
                        volumeID: volumeID, offset: offset, length: length, maximumExtents: limit)
                }.map { NBDExtent(length: $0.length, flags: $0.isHole ? Self.holeFlags : 0) }
            })
        }
        // Map lookups only, no file I/O: answered on the event loop.
        return measured(.blockStatus, since: start, eventLoop.makeCompletedFuture {
            do {
                if context == Self.allocationContext {
                    return try pool.snapshots.allocationExtents(
                        volumeID: volumeID, snapshotEpoch: epoch, offset: offset, length: length, maximumExtents: limit
                    ).map { NBDExtent(length: $0.length, flags: $0.isHole ? Self.holeFlags : 0) }
                }
                if context == NBDMetaContext.cairnCopyOnWrite, epoch == nil {
                    let shared = NBDCopyOnWriteState.shared.rawValue
                    return try pool.sharingExtents(volumeID: volumeID, offset: offset, length: length)
                        .map { NBDExtent(length: $0.length, flags: $0.shared ? shared : 0) }
                }
                guard context.hasPrefix(Self.dirtyBitmapPrefix),
                    let since = pool.snapshots.epochs(volumeID: volumeID).first(where: {
                        Self.dirtyBitmapPrefix + $0.name == context
                    })
                else {
                    throw NBDExportError(.invalid, "unknown meta context \(context)")
                }
                let end = offset + min(length, Self.maximumDirtyBitmapSpan)
                let changed = try pool.snapshots.changedExtents(
                    volumeID: volumeID, after: since.epoch, upTo: epoch ?? .max, offset: offset, length: end - offset,
                    limit: limit)
                return Self.tile(changed, from: offset, to: end)
            } catch let error as NBDExportError {
                throw error
            } catch {
                throw Self.wireError(error)
            }
        })
    }

    /// COPY_AND_WRITE through the engine: only the buffer crossed the wire, the chunk is
    /// copied inside the pool, and the target chunk is left unshared (no further copy-on-write).
    func copyAndWrite(
        target: UInt64, source: UInt64, copySize: UInt32, buffer: ByteBuffer, bufferOffset: UInt32, fua: Bool,
        eventLoop: any EventLoop
    ) -> EventLoopFuture<Void> {
        hostChange(
            .copyAndWrite, .localCopy(offset: target, length: UInt64(copySize)), offset: target, length: UInt64(copySize),
            fua: fua, eventLoop: eventLoop, writing: false, payload: UInt64(buffer.readableBytes)
        ) { pool, volumeID, routing in
            try buffer.withUnsafeReadableBytes { bytes in
                let command = CopyAndWrite(
                    source: source, target: target, copySize: copySize, buffer: bytes, bufferOffset: bufferOffset)
                // On a volume a backup splits, the session's image decides where the copy goes.
                try BackupRouting.copyAndWrite(routing, command, fua: fua) {
                    try pool.copyAndWrite(
                        volumeID: volumeID, source: source, target: target, copySize: copySize, buffer: bytes,
                        bufferOffset: bufferOffset, fua: fua)
                }
            }
        }
    }

    /// Largest range one dirty-bitmap answer covers; clients ask again from where it stopped.
    static let maximumDirtyBitmapSpan: UInt64 = 1 << 30

    /// Changed ranges as a tiling of `[from, to)`: dirty extents and clean gaps. When the list was cut
    /// short, the answer stops after the last changed extent.
    static func tile(_ changed: [ChangedExtent], from: UInt64, to: UInt64) -> [NBDExtent] {
        var extents: [NBDExtent] = []
        var position = from
        for extent in changed where extent.offset + extent.length > position {
            if extent.offset > position { extents.append(NBDExtent(length: extent.offset - position, flags: 0)) }
            let start = max(extent.offset, position)
            extents.append(NBDExtent(length: extent.offset + extent.length - start, flags: dirtyFlag))
            position = extent.offset + extent.length
        }
        if changed.count < SnapshotCatalog.maximumAllocationExtents && position < to {
            extents.append(NBDExtent(length: to - position, flags: 0))
        }
        return extents.isEmpty ? [NBDExtent(length: to - from, flags: 0)] : extents
    }

    /// Maps engine and executor errors to NBD errors (never raw errno).
    static func wireError(_ error: any Error, writing: Bool = false) -> NBDExportError {
        switch error {
        case let error as EngineError:
            switch error.code {
            case .outOfRange: return NBDExportError(writing ? .noSpace : .invalid, error.message)
            case .invalidArgument: return NBDExportError(.invalid, error.message)
            case .noSpace: return NBDExportError(.noSpace, error.message)
            case .readOnly: return NBDExportError(.permissionDenied, error.message)
            case .closed: return NBDExportError(.shuttingDown, error.message)
            default: return NBDExportError(.ioError, error.message)
            }
        case IOExecutor.SubmitError.shutDown:
            return NBDExportError(.shuttingDown, "the server is shutting down")
        case IOExecutor.SubmitError.queueFull:
            return NBDExportError(.outOfMemory, "the server's I/O queue is full")
        default:
            return NBDExportError(.ioError, "\(error)")
        }
    }
}
