import CairnEngine
import ISCSIProtocol
import ISCSIServer
import NBDServer
import NIOCore
import Synchronization

/// One iSCSI session's logical unit: a thin translation onto the session's `VolumeExport`, so SCSI
/// writes, SYNCHRONIZE CACHE, UNMAP and WRITE SAME take exactly the NBD WRITE, FLUSH and WRITE_ZEROES
/// paths (mirrors, clone groups, backup routing, metrics).
final class VolumeLogicalUnit: ISCSILogicalUnit {
    let export: VolumeExport
    let locks: CompareAndWriteLocks

    /// Stable for a volume (and per snapshot): the volume id and the snapshot's epoch.
    let serial: String
    let identifier: UInt64

    init(export: VolumeExport, locks: CompareAndWriteLocks) {
        self.export = export
        self.locks = locks
        serial = "cairn-\(export.volumeID)" + (export.snapshotEpoch.map { "-\($0)" } ?? "")
        identifier = Self.identifier(volumeID: export.volumeID, snapshotEpoch: export.snapshotEpoch)
    }

    var size: UInt64 { export.size }
    var readOnly: Bool { export.capabilities.contains(.readOnly) }

    /// The unit's NAA identifier: the volume id and the snapshot's epoch (EXTENDED COPY finds units by it).
    static func identifier(volumeID: UInt64, snapshotEpoch: UInt32?) -> UInt64 {
        volumeID << volumeIDShift | UInt64(snapshotEpoch ?? 0) & 0xFF_FFFF
    }

    /// Bits of an identifier below the volume id (the snapshot's epoch).
    static let volumeIDShift: UInt64 = 24

    func read(offset: UInt64, length: UInt32, eventLoop: any EventLoop) -> EventLoopFuture<ByteBuffer> {
        let segments = export.readImmediately(offset: offset, length: length).map { eventLoop.makeSucceededFuture($0) }
            ?? export.read(offset: offset, length: length, eventLoop: eventLoop)
        return translate(segments.map { Self.assemble($0, offset: offset, length: length) })
    }

    /// The READ reply's segments as one buffer, holes as zeros.
    static func assemble(_ segments: [NBDReadSegment], offset: UInt64, length: UInt32) -> ByteBuffer {
        if segments.count == 1, case .data(let at, let data) = segments[0], at == offset,
            data.readableBytes == Int(length)
        {
            return data
        }
        var buffer = ByteBuffer(repeating: 0, count: Int(length))
        for segment in segments {
            if case .data(let at, let data) = segment {
                buffer.setBuffer(data, at: Int(at - offset))
            }
        }
        return buffer
    }

    func write(offset: UInt64, data: ByteBuffer, fua: Bool, eventLoop: any EventLoop) -> EventLoopFuture<Void> {
        translate(export.write(offset: offset, data: data, fua: fua, eventLoop: eventLoop))
    }

    func flush(eventLoop: any EventLoop) -> EventLoopFuture<Void> {
        translate(export.flush(eventLoop: eventLoop))
    }

    /// UNMAP promises zeros (LBPRZ), so it is NBD's WRITE_ZEROES without NO_HOLE, not the advisory TRIM
    /// (which leaves partial sub-blocks as they were).
    func unmap(offset: UInt64, length: UInt64, fua: Bool, eventLoop: any EventLoop) -> EventLoopFuture<Void> {
        translate(
            export.writeZeroes(offset: offset, length: length, punch: true, fast: false, fua: fua, eventLoop: eventLoop))
    }

    func writeZeroes(offset: UInt64, length: UInt64, fua: Bool, eventLoop: any EventLoop) -> EventLoopFuture<Void> {
        translate(
            export.writeZeroes(offset: offset, length: length, punch: false, fast: false, fua: fua, eventLoop: eventLoop))
    }

    func allocation(offset: UInt64, length: UInt64, eventLoop: any EventLoop) -> EventLoopFuture<[ISCSIAllocationExtent]> {
        translate(
            export.blockStatus(context: VolumeExport.allocationContext, offset: offset, length: length, eventLoop: eventLoop)
                .map { extents in
                    extents.map { ISCSIAllocationExtent(length: $0.length, mapped: $0.flags & 1 == 0) }
                })
    }

    /// Read, compare, write, one COMPARE AND WRITE at a time per volume: VMware's ATS lock works between
    /// hosts that all use ATS. A plain WRITE racing into the same blocks is not held off (the engine has
    /// no range lock to offer the protocol layer).
    func compareAndWrite(
        offset: UInt64, expected: ByteBuffer, data: ByteBuffer, fua: Bool, eventLoop: any EventLoop
    ) -> EventLoopFuture<UInt32?> {
        locks.serialize(volumeID: export.volumeID, eventLoop: eventLoop) {
            self.read(offset: offset, length: UInt32(expected.readableBytes), eventLoop: eventLoop).flatMap { stored in
                if let difference = SCSICompare.firstDifference(stored, expected) {
                    return eventLoop.makeSucceededFuture(difference)
                }
                return self.write(offset: offset, data: data, fua: fua, eventLoop: eventLoop).map { nil }
            }
        }
    }

    /// Read, OR, write under the same per-volume lock as COMPARE AND WRITE, so the two never interleave.
    func orWrite(offset: UInt64, data: ByteBuffer, fua: Bool, eventLoop: any EventLoop) -> EventLoopFuture<Void> {
        locks.serialize(volumeID: export.volumeID, eventLoop: eventLoop) {
            self.read(offset: offset, length: UInt32(data.readableBytes), eventLoop: eventLoop).flatMap { stored in
                let combined = SCSIOrWrite.combine(stored, with: data)
                return self.write(offset: offset, data: combined, fua: fua, eventLoop: eventLoop)
            }
        }
    }

    /// NBD export errors as logical unit errors (the handler picks the sense data).
    func translate<T>(_ future: EventLoopFuture<T>) -> EventLoopFuture<T> {
        future.flatMapErrorThrowing { error in
            guard let error = error as? NBDExportError else { throw ISCSILogicalUnitError(.ioError, "\(error)") }
            switch error.code {
            case .permissionDenied: throw ISCSILogicalUnitError(.readOnly, error.message)
            case .noSpace: throw ISCSILogicalUnitError(.noSpace, error.message)
            case .invalid, .overflow, .notSupported: throw ISCSILogicalUnitError(.invalid, error.message)
            case .shuttingDown, .outOfMemory: throw ISCSILogicalUnitError(.unavailable, error.message)
            case .ioError: throw ISCSILogicalUnitError(.ioError, error.message)
            }
        }
    }
}

/// One COMPARE AND WRITE at a time per volume, across sessions: each waits for the previous one's
/// future before it starts.
final class CompareAndWriteLocks: Sendable {
    private let tails = Mutex<[UInt64: EventLoopFuture<Void>]>([:])

    func serialize<T: Sendable>(
        volumeID: UInt64, eventLoop: any EventLoop, _ body: @escaping @Sendable () -> EventLoopFuture<T>
    ) -> EventLoopFuture<T> {
        let promise = eventLoop.makePromise(of: Void.self)
        let previous = tails.withLock { tails -> EventLoopFuture<Void>? in
            let previous = tails[volumeID]
            tails[volumeID] = promise.futureResult
            return previous
        }
        let start = previous.map { $0.hop(to: eventLoop) } ?? eventLoop.makeSucceededVoidFuture()
        let result = start.flatMap { body() }
        result.whenComplete { _ in
            self.tails.withLock { tails in
                if tails[volumeID] === promise.futureResult { tails[volumeID] = nil }
            }
            promise.succeed()
        }
        return result
    }
}
