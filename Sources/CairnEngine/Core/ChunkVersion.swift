/// Where a chunk's data lives: slot file id (high 16 bits) and slot index (low 48 bits).
public struct SlotAddress: RawRepresentable, Hashable, Sendable, Comparable, CustomStringConvertible {
    public let rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }

    public init(file: UInt16, index: UInt64) {
        precondition(index < Self.indexLimit, "slot index out of range")
        rawValue = UInt64(file) << 48 | index
    }

    /// Slot indexes are 48 bits: 2^48 slots of at least 4 KiB is far beyond any filesystem's file size.
    public static let indexLimit: UInt64 = 1 << 48
    /// "No slot": the version is a tombstone (reads as zeros).
    public static let none = SlotAddress(rawValue: ~0)

    public var file: UInt16 { UInt16(truncatingIfNeeded: rawValue >> 48) }
    public var index: UInt64 { rawValue & (Self.indexLimit - 1) }
    public var isNone: Bool { self == .none }

    public static func < (lhs: SlotAddress, rhs: SlotAddress) -> Bool { lhs.rawValue < rhs.rawValue }
    public var description: String { isNone ? "none" : "\(file):\(index)" }
}

/// One version of one chunk, written in epoch `birth`.
///
/// A version *defines* the sub-blocks in `definedMask`: those in `dataMask` are read from `slot`, the
/// other defined ones read as zeros. Sub-blocks it does not define fall through to the next older
/// version (and for a clone, to its parent), the way qcow2 subclusters fall through to a backing file.
/// That is what lets a 4 KiB write after a snapshot cost 4 KiB: the new version defines only what was
/// written. A version without a slot holds no data (a tombstone when it defines everything).
public struct ChunkVersion: Hashable, Sendable {
    public var birth: UInt32
    public var slot: SlotAddress
    public var dataMask: UInt64
    public var definedMask: UInt64

    public init(birth: UInt32, slot: SlotAddress, dataMask: UInt64, definedMask: UInt64) {
        self.birth = birth
        self.slot = slot
        self.dataMask = dataMask
        self.definedMask = definedMask
    }

    /// A version that reads as zeros wherever it defines, hiding what is underneath.
    public static func zeros(birth: UInt32, defining mask: UInt64) -> ChunkVersion {
        ChunkVersion(birth: birth, slot: .none, dataMask: 0, definedMask: mask)
    }

    public var hasSlot: Bool { !slot.isNone }
}

/// The versions of one chunk, oldest first. Almost every chunk has exactly one version, so that case
/// is stored inline without an array allocation.
public enum VersionList: Hashable, Sendable {
    case one(ChunkVersion)
    case many([ChunkVersion])

    public init(_ versions: [ChunkVersion]) {
        precondition(!versions.isEmpty)
        self = versions.count == 1 ? .one(versions[0]) : .many(versions)
    }

    public var versions: [ChunkVersion] {
        switch self {
        case .one(let v): [v]
        case .many(let vs): vs
        }
    }

    public var latest: ChunkVersion {
        switch self {
        case .one(let v): v
        case .many(let vs): vs[vs.count - 1]
        }
    }

    public var count: Int {
        switch self {
        case .one: 1
        case .many(let vs): vs.count
        }
    }

    /// Newest version born at or before `epoch`.
    public func visible(at epoch: UInt32) -> ChunkVersion? {
        switch self {
        case .one(let v): return v.birth <= epoch ? v : nil
        case .many(let vs):
            for v in vs.reversed() where v.birth <= epoch { return v }
            return nil
        }
    }

    /// Replaces the newest version.
    public mutating func replaceLatest(with version: ChunkVersion) {
        switch self {
        case .one: self = .one(version)
        case .many(var vs):
            vs[vs.count - 1] = version
            self = .many(vs)
        }
    }

    /// Adds a version newer than all others.
    public mutating func append(_ version: ChunkVersion) {
        var vs = versions
        precondition(version.birth > vs[vs.count - 1].birth, "versions must be appended in birth order")
        vs.append(version)
        self = .many(vs)
    }

    /// Removes the newest version; returns nil when none is left.
    public func droppingLatest() -> VersionList? {
        let vs = versions
        return vs.count == 1 ? nil : VersionList(Array(vs.dropLast()))
    }
}
