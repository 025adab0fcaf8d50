import CairnEngine
import CairnIO
import Logging
import MirrorProtocol
import NIOCore
import Synchronization

extension PrimaryMirror {
    /// Replaces a damaged range of the local volume with the target's copy: ZFS's self-healing, across
    /// nodes. Only while the mirror is `mirrored` (the target holds every write acknowledged here) and the
    /// range's extents are clean in the change map, so the target's bytes are exactly what the host last
    /// wrote. Under the overlap gate, like a resync's pull: no host write to the range runs meanwhile.
    /// Returns false when the target's copy cannot be trusted or is out of reach.
    func repairFromTarget(offset: UInt64, length: UInt64) async throws -> Bool {
        guard length > 0, length <= UInt64(MirrorLimits.maximumFrameSize),
            state.withLock({ !$0.removed && $0.link.state == .mirrored })
        else { return false }
        let extents = changeMap.extents(offset: offset, length: length)
        let pool = self.pool
        let volume = volumeID
        return try await gate.withRange(offset..<(offset + length)) {
            guard !changeMap.containsDirty(extents) else { return false }
            let handle = state.withLock { $0.handle }
            let reply = try await send(.read, payload: MirrorRange(handle: handle, offset: offset, length: length).payload)
            let data = reply.payload
            guard UInt64(data.readableBytes) == length else { return false }
            // A whole-block write replaces the data and its checksum; FUA: the repair is durable at once.
            try await executor.run {
                try data.withUnsafeReadableBytes { bytes in
                    try pool.write(volumeID: volume, offset: offset, source: .bytes(bytes), fua: true)
                }
            }
            logger.notice(
                "repaired damaged data from the mirror target",
                metadata: ["volume": "\(volume)", "offset": "\(offset)", "length": "\(length)"])
            return true
        }
    }
}

extension Replication {
    /// Repairs `[offset, offset + length)` of volume `name` from its mirror target (see
    /// `PrimaryMirror.repairFromTarget`). False when the volume has no mirror in the `mirrored` state.
    public func repairFromTarget(volume name: String, offset: UInt64, length: UInt64) async throws -> Bool {
        guard let mirror = try? mirror(named: name) else { return false }
        return try await mirror.repairFromTarget(offset: offset, length: length)
    }
}
