import CairnReplication
import NBDServer
import NIOCore

extension VolumeExport {
    /// A host write to a mirrored live volume, through its mirror (write-intent, then the local write and
    /// the target's frames together). A write to an unmirrored volume runs `local` as it is, counted while
    /// in flight; nil only without a replication layer (the caller then writes locally).
    func mirrored(
        _ operation: MirrorOperation, fua: Bool, eventLoop: any EventLoop,
        _ local: @escaping @Sendable () -> EventLoopFuture<Void>
    ) -> EventLoopFuture<Void>? {
        guard snapshotEpoch == nil, let replication else { return nil }
        guard let mirror = replication.routeWrite(volumeID: volumeID) else {
            // Counted while in flight, so an `establish` starting now waits for it (see `routeWrite`).
            let volumeID = self.volumeID
            let written = local()
            written.whenComplete { _ in replication.unmirroredWriteEnded(volumeID: volumeID) }
            return written
        }
        if let written = mirror.writeWithoutWaiting(operation, fua: fua, eventLoop: eventLoop, local: local) {
            return written.flatMapErrorThrowing { error in
                if error is NBDExportError { throw error }
                throw Self.wireError(error, writing: true)
            }
        }
        let promise = eventLoop.makePromise(of: Void.self)
        promise.completeWithTask {
            do {
                try await mirror.write(operation, fua: fua) { try await local().get() }
            } catch let error as NBDExportError {
                throw error
            } catch {
                throw Self.wireError(error, writing: true)
            }
        }
        return promise.futureResult
    }

    /// The mirror a read of the live volume must first pull from, when it covers extents that mirror is
    /// still taking from the target; nil (the usual case, one atomic load while no pull runs) otherwise.
    func mirrorToPullFrom(offset: UInt64, length: UInt32) -> PrimaryMirror? {
        guard PrimaryMirror.anyPullPending, snapshotEpoch == nil, let mirror = replication?.primary(volumeID: volumeID),
            mirror.needsPull(offset: offset, length: UInt64(length))
        else { return nil }
        return mirror
    }

    /// A read of extents not yet taken from the target (`re-establish --take-target-changes`): they are
    /// pulled first, then the read runs as usual. nil (the usual case, one atomic load): read now.
    func readAfterPull(offset: UInt64, length: UInt32, eventLoop: any EventLoop) -> EventLoopFuture<[NBDReadSegment]>? {
        guard let mirror = mirrorToPullFrom(offset: offset, length: length) else { return nil }
        let promise = eventLoop.makePromise(of: Void.self)
        promise.completeWithTask {
            do {
                try await mirror.pullOnDemand(offset: offset, length: UInt64(length))
            } catch let error as NBDExportError {
                throw error
            } catch {
                throw Self.wireError(error)
            }
        }
        return promise.futureResult.flatMap { self.read(offset: offset, length: length, eventLoop: eventLoop) }
    }

    /// A host FLUSH of a mirrored volume flushes the target too.
    func mirroredFlush(eventLoop: any EventLoop, _ local: @escaping @Sendable () -> EventLoopFuture<Void>)
        -> EventLoopFuture<Void>?
    {
        guard snapshotEpoch == nil, let mirror = replication?.primary(volumeID: volumeID) else { return nil }
        let promise = eventLoop.makePromise(of: Void.self)
        promise.completeWithTask {
            do {
                try await mirror.flush { try await local().get() }
            } catch let error as NBDExportError {
                throw error
            } catch {
                throw Self.wireError(error)
            }
        }
        return promise.futureResult
    }
}
