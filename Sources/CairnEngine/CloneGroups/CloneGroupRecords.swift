import Foundation

/// Where a clone stands with its source. Every transition is a management operation or the
/// end of a job; see docs/ARCHITECTURE.md, "Clone groups".
public enum CloneState: String, Codable, Sendable, Hashable {
    /// The sync engine copies the delta map's extents source → clone; host writes to the source are
    /// mirrored to the clone. Host writes to the clone are refused.
    case synchronizing
    /// Identical to the source; host writes to the source are mirrored before they are acknowledged.
    case synchronized
    /// A point-in-time copy: mirroring stopped, the delta map records every extent either side changes.
    case fractured
    /// Regular reverse sync, clone → source: host writes to the source are mirrored to the clone and host
    /// reads of the source are served from the clone.
    case reverseSyncing = "reverse-syncing"
    /// Protected restore, clone → source: the clone is never modified; host I/O to the source goes
    /// through copy-on-demand; host writes set bits in the protected restore map.
    case restoring
}

/// One clone of a group, as persisted.
public struct CloneRecord: Codable, Sendable, Hashable {
    /// The clone's volume id.
    public var volumeID: UInt64
    public var state: CloneState
    /// Milliseconds since 1970.
    public var createdAt: Int64
}

/// A clone group as persisted (one row of `clone_groups`, JSON): the source and its clones. The maps
/// live in `clone_maps`, keyed by the source's volume id.
public struct CloneGroupRecord: Codable, Sendable, Hashable {
    public var sourceID: UInt64
    /// Bytes per delta-map bit, fixed when the group is created.
    public var extentSize: UInt64
    public var clones: [CloneRecord]
}

/// Which persisted map a `CloneMapBlock` belongs to.
public enum CloneMapKind: UInt8, Sendable, Hashable {
    /// The clone-group design's persistent delta map: one map for the whole group, the union of every clone's delta
    /// map (and of the write-intent extents of mirrored clones). At recovery every clone's delta map is
    /// filled from it.
    case persistentDelta = 0
    /// The persistent protected restore map of the restore in progress.
    case protectedRestore = 1
}

/// One stored block of a clone-group map (one row of `clone_maps`); `bits` nil deletes the row (all zero).
public struct CloneMapBlock: Sendable, Hashable {
    public var sourceID: UInt64
    public var kind: CloneMapKind
    public var block: UInt32
    public var bits: [UInt8]?

    public init(sourceID: UInt64, kind: CloneMapKind, block: UInt32, bits: [UInt8]?) {
        self.sourceID = sourceID
        self.kind = kind
        self.block = block
        self.bits = bits
    }
}

/// A clone as management commands show it.
public struct CloneInfo: Sendable, Hashable {
    public var name: String
    public var source: String
    public var state: CloneState
    public var extentSize: UInt64
    public var extentCount: UInt64
    /// Extents set in the clone's delta map (still to copy while a job runs).
    public var deltaExtents: UInt64
    /// Extents set in the protected restore map (restoring only).
    public var restoreMapExtents: UInt64?
    /// The job that works on this clone now, or last did.
    public var job: UInt64?
    public var createdAt: Int64
}
