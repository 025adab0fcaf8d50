import CairnEngine
import ISCSIServer
import NIOCore

/// EXTENDED COPY between two Cairn logical units: the engine's range copy (shared chunks, copies inside
/// the pool), or, while a backup splits a side, reads and writes through the exports (still never
/// through the initiator).
extension VolumeLogicalUnit {
    func copy(
        from source: any ISCSILogicalUnit, sourceOffset: UInt64, offset: UInt64, length: UInt64,
        eventLoop: any EventLoop
    ) -> EventLoopFuture<Void> {
        if let source = source as? VolumeLogicalUnit,
            let copied = export.copyRange(
                from: source.export, sourceOffset: sourceOffset, offset: offset, length: length, eventLoop: eventLoop)
        {
            return translate(copied)
        }
        return copyByPieces(from: source, sourceOffset: sourceOffset, offset: offset, length: length, eventLoop: eventLoop)
    }
}
