import CairnIO

/// An extent of allocation status (NBD `base:allocation`).
public struct AllocationExtent: Sendable, Hashable {
    public var length: UInt64
    /// Nothing is allocated: the range reads as zeros (NBD_STATE_HOLE | NBD_STATE_ZERO).
    public var isHole: Bool

    public init(length: UInt64, isHole: Bool) {
        self.length = length
        self.isHole = isHole
    }
}

extension SnapshotCatalog {
    /// Most extents one block status answer carries. NBD lets a server describe less than asked; the
    /// client asks again from where the answer stopped (qemu and nbdinfo do).
    public static let maximumAllocationExtents = 2048

    /// Allocation status of the live volume (or of its snapshot at `snapshotEpoch`) from `offset`,
    /// covering at most `length` bytes and at most `maximumAllocationExtents` extents. The first extent
    /// starts at `offset`.
    public func allocationExtents(
        volumeID: UInt64, snapshotEpoch: UInt32? = nil, offset: UInt64, length: UInt64,
        maximumExtents: Int = SnapshotCatalog.maximumAllocationExtents
    ) throws -> [AllocationExtent] {
        let limit = max(1, min(maximumExtents, Self.maximumAllocationExtents))
        // A source being restored reads its clone's data where its own slots hold nothing yet: all data.
        let restoring = snapshotEpoch == nil && pool.cloneGroups.routesReads(volumeID: volumeID)
        return try pool.monitor.withLock {
            let volume = try pool.state.liveVolume(volumeID)
            let size = try snapshotEpoch.map { try volume.snapshot(atEpoch: $0).size } ?? volume.record.size
            guard offset < size else {
                throw EngineError(.invalidArgument, "offset \(offset) is past the end of the volume")
            }
            let end = offset + min(length, size - offset)
            if restoring { return [AllocationExtent(length: end - offset, isHole: false)] }
            let g = volume.geometry
            let sub = UInt64(g.subBlockSize)
            var extents: [AllocationExtent] = []
            func add(_ length: UInt64, hole: Bool) {
                guard length > 0 else { return }
                if let last = extents.last, last.isHole == hole {
                    extents[extents.count - 1].length += length
                } else {
                    extents.append(AllocationExtent(length: length, isHole: hole))
                }
            }
            var indexes = [volume.present]
            var link = volume.record.parent
            while let current = link, let parent = pool.state.volumes[current.volumeID] {
                indexes.append(parent.present)
                link = parent.record.parent
            }
            var position = offset
            // One more than the limit is gathered so the last kept extent is known to be complete.
            while position < end && extents.count <= limit {
                let chunk = g.chunk(containing: position)
                guard let next = indexes.compactMap({ $0.next(atOrAfter: chunk) }).min() else {
                    add(end - position, hole: true)
                    break
                }
                if next > chunk {
                    let holeEnd = min(end, g.start(of: next))
                    add(holeEnd - position, hole: true)
                    position = holeEnd
                    continue
                }
                let chunkStart = g.start(of: chunk)
                let chunkEnd = min(end, chunkStart + UInt64(g.chunkSize))
                let mask = pool.state.resolve(volume, chunk, epoch: snapshotEpoch ?? .max, wanted: g.fullMask).dataMask
                while position < chunkEnd {
                    let bit = (position - chunkStart) / sub
                    let runEnd = min(chunkEnd, chunkStart + (bit + 1) * sub)
                    add(runEnd - position, hole: mask & (UInt64(1) << bit) == 0)
                    position = runEnd
                }
            }
            // An extent cut off by the limit would understate its length; extents always end at a real
            // state change or the end of the asked range, except the one in progress when the loop stopped.
            return Array(extents.prefix(limit))
        }
    }
}
