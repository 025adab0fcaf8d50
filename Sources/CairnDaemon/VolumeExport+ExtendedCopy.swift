import CairnEngine
import CairnReplication
import NIOCore

/// SCSI EXTENDED COPY into a live volume, as the engine's range copy: whole chunks that line up become
/// shared, the rest is copied inside the pool. Nothing crosses a network.
extension VolumeExport {
    /// Copies `length` bytes of `source` (a volume or snapshot of the same pool) at `sourceOffset` onto
    /// this volume at `offset`. nil when a backup splits either side: the session's image decides where
    /// those reads and writes go, so the caller copies through `read` and `write` instead.
    func copyRange(
        from source: VolumeExport, sourceOffset: UInt64, offset: UInt64, length: UInt64, eventLoop: any EventLoop
    ) -> EventLoopFuture<Void>? {
        guard snapshotEpoch == nil, source.pool === pool, backupRoute?.isActive != true,
            source.backupRoute?.isActive != true
        else { return nil }
        let pool = self.pool
        let volumeID = self.volumeID
        let replication = self.replication
        let sourceID = source.volumeID
        let epoch = source.snapshotEpoch
        let local: @Sendable () -> EventLoopFuture<Void> = {
            self.run(on: eventLoop, writing: true) {
                try replication?.target.beforeHostWrite(volumeID: volumeID, offset: offset, length: length)
                _ = try pool.copyVolumeRange(
                    from: sourceID, snapshotEpoch: epoch, sourceOffset: sourceOffset, to: volumeID,
                    targetOffset: offset, length: length, fua: false)
            }
        }
        // A mirrored volume sends the copied range to its mirror like a COPY_AND_WRITE.
        return mirrored(.localCopy(offset: offset, length: length), fua: false, eventLoop: eventLoop, local) ?? local()
    }
}
