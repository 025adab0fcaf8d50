import CairnIO

/// A range of a volume that changed between two points in time.
public struct ChangedExtent: Sendable, Hashable {
    public var offset: UInt64
    public var length: UInt64

    public init(offset: UInt64, length: UInt64) {
        self.offset = offset
        self.length = length
    }
}

extension SnapshotCatalog {
    /// Ranges written between snapshot `from` and snapshot `to` (nil: the live volume), from metadata
    /// alone: the sub-blocks defined by versions born after `from` and no later than `to`. No data is
    /// read. A superset of what differs (a write of identical bytes counts), never a subset.
    public func changedExtents(volume name: String, from: String, to: String?) throws -> [ChangedExtent] {
        let (id, fromEpoch, toEpoch, size) = try pool.monitor.withLock { () -> (UInt64, UInt32, UInt32, UInt64) in
            let volume = try pool.state.volume(named: name)
            let start = try volume.snapshot(named: from)
            let end = try to.map { try volume.snapshot(named: $0) }
            if let end, end.epoch <= start.epoch {
                throw EngineError(.invalidArgument, "'\(from)' must be older than '\(end.name)'")
            }
            return (volume.id, start.epoch, end?.epoch ?? .max, end?.size ?? volume.record.size)
        }
        return try changedExtents(volumeID: id, after: fromEpoch, upTo: toEpoch, offset: 0, length: size, limit: .max)
    }

    /// Changed ranges in `[offset, offset + length)` between epochs (`after`, `upTo`], at most `limit`
    /// extents (NBD block status asks for bounded answers).
    public func changedExtents(
        volumeID: UInt64, after fromEpoch: UInt32, upTo toEpoch: UInt32, offset: UInt64, length: UInt64, limit: Int
    ) throws -> [ChangedExtent] {
        try pool.monitor.withLock {
            let volume = try pool.state.liveVolume(volumeID)
            let g = volume.geometry
            let sub = UInt64(g.subBlockSize)
            let end = offset + length
            var result: [ChangedExtent] = []
            var cursor = g.chunk(containing: offset)
            while result.count < limit, let chunk = volume.present.next(atOrAfter: cursor) {
                cursor = chunk + 1
                let chunkStart = g.start(of: chunk)
                guard chunkStart < end else { break }
                var changed: UInt64 = 0
                for version in volume.map[chunk]!.versions where version.birth > fromEpoch && version.birth <= toEpoch {
                    changed |= version.definedMask
                }
                changed.forEachRun { first, count in
                    let lower = max(offset, chunkStart + UInt64(first) * sub)
                    let upper = min(end, chunkStart + UInt64(first + count) * sub)
                    guard upper > lower else { return }
                    if let last = result.last, last.offset + last.length == lower {
                        result[result.count - 1].length += upper - lower
                    } else {
                        result.append(ChangedExtent(offset: lower, length: upper - lower))
                    }
                }
            }
            return result
        }
    }
}
