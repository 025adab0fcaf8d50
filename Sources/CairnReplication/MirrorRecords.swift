import MirrorProtocol

/// The primary's persistent record of one mirrored volume (`mirrors/primary-<volume id>.json`).
public struct PrimaryMirrorRecord: Codable, Sendable, Equatable {
    /// Mirror states as users see them.
    public enum State: String, Codable, Sendable {
        /// The target is being brought up to date (initial sync or resync); host writes are mirrored.
        case synchronizing
        /// Both sides equal; every host write is acknowledged only once both have it.
        case mirrored
        /// The link failed (timeout after the retries): writes go on locally and are tracked.
        case fractured
        /// The operator severed the mirror: writes are tracked; the target volume is usable on its own.
        case severed
    }

    public var volumeID: UInt64
    public var targetHost: String
    public var targetPort: Int
    public var targetVolume: String
    /// Bytes per change-map bit.
    public var extentSize: UInt64
    public var state: State
    public var generations: MirrorGenerations
    /// Largest data payload per frame.
    public var frameSize: UInt32
    /// Created at (ms since the epoch).
    public var createdAt: Int64
    public var lastError: String?
    /// ASYNCHRONOUS mode: host writes complete once local, with at most this many bytes not yet
    /// acknowledged by the target. nil (the default): synchronous.
    public var asynchronousLagBytes: UInt64?
    /// `re-establish --take-target-changes` is copying the target's changes here (the pull set is
    /// `mirrors/primary-<id>.pull`); reconnects ask the target to keep its change map until it is done.
    /// nil in records written before this existed: false.
    public var takingTargetChanges: Bool?
    /// A write or sync of the change map failed, so its bits cannot be trusted: at the next start every
    /// extent is marked dirty (a full resync). nil in records written before this existed: false.
    public var changeMapLost: Bool?

    public var target: String { "\(targetHost):\(targetPort)/\(targetVolume)" }
}

/// Where a target volume stands in its pairing. Every state but `mirroring` and `takingChanges` lets hosts
/// write the volume (the primary severed it, or it was promoted here), and then each host write's extents
/// are set in the target change map first. `MirrorTargetMachine` moves a record between these states.
public enum TargetMirrorState: Sendable, Equatable {
    /// Paired and not severed: read-only to hosts, the primary's frames keep it equal to the primary.
    case mirroring
    /// Severed by the primary: writable by hosts; `modified` once one wrote it (recorded before that
    /// first write's data).
    case severed(modified: Bool)
    /// Promoted here (`cairn mirror promote`, failover): writable by hosts, the primary fenced off until it
    /// re-establishes with a choice. `generation`: a fresh random value at promotion.
    case promoted(generation: UInt64, modified: Bool)
    /// The primary is taking this volume's changes (`--take-target-changes`): read-only again, the change
    /// map kept until `synchronized`.
    case takingChanges
    /// A take in progress, then severed or promoted again (`promotedGeneration` non-nil): writable by
    /// hosts. `writtenDuringTake`: a host wrote it since, so the take cannot simply resume.
    case takeInterrupted(promotedGeneration: UInt64?, writtenDuringTake: Bool)

    /// Hosts may write the volume (severed or promoted).
    public var isHostWritable: Bool {
        switch self {
        case .mirroring, .takingChanges: false
        case .severed, .promoted, .takeInterrupted: true
        }
    }
}

/// The target's persistent record of a volume paired with a primary (`mirrors/target-<volume id>.json`):
/// the target's half of the target's tables 509.
///
/// On disk the state is the flags earlier versions wrote (`modified`, `severed`, `promoted`,
/// `promotedGeneration`, `takeInProgress`, `writtenDuringTake`), so records written before the state
/// had its own type load unchanged; a combination no state describes is refused as corrupt.
public struct TargetMirrorRecord: Sendable, Equatable {
    public var volumeID: UInt64
    public var pairID: UInt64
    /// The generation whose data this volume fully holds (set when a resync completes); 0 until the
    /// first sync completes.
    public var generation: UInt64
    /// The primary's node name, for status.
    public var primaryNode: String
    public var state: TargetMirrorState

    public init(volumeID: UInt64, pairID: UInt64, generation: UInt64, primaryNode: String, state: TargetMirrorState) {
        self.volumeID = volumeID
        self.pairID = pairID
        self.generation = generation
        self.primaryNode = primaryNode
        self.state = state
    }

    /// A host wrote to the volume on its own (severed or promoted, or before a take in progress): it
    /// diverged from the primary.
    public var modified: Bool {
        switch state {
        case .mirroring: false
        case .severed(let modified), .promoted(_, let modified): modified
        case .takingChanges, .takeInterrupted: true
        }
    }

    /// Hosts may use the volume read-write (severed by the primary, or promoted).
    public var severed: Bool { state.isHostWritable }

    /// Promoted on the target (`cairn mirror promote`, failover).
    public var promoted: Bool { promotedGeneration != nil }

    /// The generation the promoted volume's own data started (a fresh random value at promotion).
    public var promotedGeneration: UInt64? {
        switch state {
        case .promoted(let generation, _): generation
        case .takeInterrupted(let generation, _): generation
        case .mirroring, .severed, .takingChanges: nil
        }
    }

    /// The primary is taking this volume's changes (`--take-target-changes`) and has not finished.
    public var takeInProgress: Bool {
        switch state {
        case .takingChanges, .takeInterrupted: true
        case .mirroring, .severed, .promoted: false
        }
    }

    /// Written by a host (after a sever or a second promotion) while a take was in progress: those newest
    /// writes are not in the primary's pull set, so the take cannot simply resume.
    public var writtenDuringTake: Bool {
        if case .takeInterrupted(_, true) = state { return true }
        return false
    }

    /// Hosts wrote it on its own (severed or promoted), or it was promoted: the primary must choose.
    var changedHere: Bool { modified || promoted }
}

extension TargetMirrorRecord: Codable {
    enum CodingKeys: String, CodingKey {
        case volumeID, pairID, generation, primaryNode
        case modified, severed, promoted, promotedGeneration, takeInProgress, writtenDuringTake
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        volumeID = try c.decode(UInt64.self, forKey: .volumeID)
        pairID = try c.decode(UInt64.self, forKey: .pairID)
        generation = try c.decode(UInt64.self, forKey: .generation)
        primaryNode = try c.decode(String.self, forKey: .primaryNode)
        let modified = try c.decode(Bool.self, forKey: .modified)
        let severed = try c.decode(Bool.self, forKey: .severed)
        // Absent in records written before promotion and taking changes existed: false.
        let promoted = try c.decodeIfPresent(Bool.self, forKey: .promoted) ?? false
        let promotedGeneration = try c.decodeIfPresent(UInt64.self, forKey: .promotedGeneration)
        let take = try c.decodeIfPresent(Bool.self, forKey: .takeInProgress) ?? false
        let writtenDuringTake = try c.decodeIfPresent(Bool.self, forKey: .writtenDuringTake) ?? false
        guard
            let state = Self.state(
                modified: modified, severed: severed, promoted: promoted, promotedGeneration: promotedGeneration,
                take: take, writtenDuringTake: writtenDuringTake)
        else {
            throw DecodingError.dataCorrupted(
                DecodingError.Context(
                    codingPath: [],
                    debugDescription:
                        "no target state has modified \(modified), severed \(severed), promoted \(promoted) (generation \(promotedGeneration.map { String($0, radix: 16) } ?? "none")), takeInProgress \(take), writtenDuringTake \(writtenDuringTake)"
                ))
        }
        self.state = state
    }

    /// The state the flags describe; nil for a combination no version of the target writes.
    static func state(
        modified: Bool, severed: Bool, promoted: Bool, promotedGeneration: UInt64?, take: Bool, writtenDuringTake: Bool
    ) -> TargetMirrorState? {
        // Promotion always records a generation and severs.
        guard !promoted || (promotedGeneration != nil && severed) else { return nil }
        let promotedGeneration = promoted ? promotedGeneration : nil
        if take {
            // A take keeps the target's changes, so the record says modified.
            guard modified else { return nil }
            if severed { return .takeInterrupted(promotedGeneration: promotedGeneration, writtenDuringTake: writtenDuringTake) }
            return writtenDuringTake ? nil : .takingChanges
        }
        guard !writtenDuringTake else { return nil }
        if let promotedGeneration { return .promoted(generation: promotedGeneration, modified: modified) }
        if severed { return .severed(modified: modified) }
        // Only a host write while severed sets `modified`; establish clears it unless a take keeps it.
        return modified ? nil : .mirroring
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(volumeID, forKey: .volumeID)
        try c.encode(pairID, forKey: .pairID)
        try c.encode(generation, forKey: .generation)
        try c.encode(primaryNode, forKey: .primaryNode)
        try c.encode(modified, forKey: .modified)
        try c.encode(severed, forKey: .severed)
        // Written only when set, as before: a record a previous version can still read.
        if promoted { try c.encode(true, forKey: .promoted) }
        try c.encodeIfPresent(promotedGeneration, forKey: .promotedGeneration)
        if takeInProgress { try c.encode(true, forKey: .takeInProgress) }
        if writtenDuringTake { try c.encode(true, forKey: .writtenDuringTake) }
    }
}
