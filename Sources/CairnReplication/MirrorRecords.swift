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

/// The target's persistent record of a volume paired with a primary (`mirrors/target-<volume id>.json`):
/// the target's half of the target's tables 509.
public struct TargetMirrorRecord: Codable, Sendable, Equatable {
    public var volumeID: UInt64
    public var pairID: UInt64
    /// The generation whose data this volume fully holds (set when a resync completes); 0 until the
    /// first sync completes.
    public var generation: UInt64
    /// A host wrote to the volume while it was severed: it diverged from the primary.
    public var modified: Bool
    /// Severed by the primary: hosts may use the volume read-write (writes set `modified`).
    public var severed: Bool
    /// The primary's node name, for status.
    public var primaryNode: String
    /// Promoted on the target (`cairn mirror promote`, failover): writable by hosts, the primary fenced off
    /// until it re-establishes with an explicit choice. nil in records written before this existed: false.
    public var promoted: Bool?
    /// The generation the promoted volume's own data started (a fresh random value at promotion).
    public var promotedGeneration: UInt64?

    /// The primary is taking this volume's changes (`--take-target-changes`) and has not finished.
    public var takeInProgress: Bool?
    /// Written by a host (after a sever or a second promotion) while a take was in progress: those newest
    /// writes are not in the primary's pull set, so the take cannot simply resume.
    public var writtenDuringTake: Bool?

    /// Hosts wrote it on its own (severed or promoted), or it was promoted: the primary must choose.
    var changedHere: Bool { modified || (promoted ?? false) }
}
