/// A remote mirror as the management API shows it (GET /v1/mirrors, /v1/mirrors/{volume}).
public struct MirrorDTO: Codable, Sendable, Hashable {
    /// The primary volume on this daemon.
    public var volume: String
    /// HOST:PORT/VOLUME of the target.
    public var target: String
    /// synchronizing, mirrored, fractured, severed.
    public var state: String
    /// Bytes per change-map bit.
    public var extentSize: UInt64
    public var extentCount: UInt64
    /// Extents the target may lack (dirty, or written recently and not yet checkpointed).
    public var changedExtents: UInt64
    /// Extents the target certainly lacks: what a resync still copies (the lag, in extents).
    public var dirtyExtents: UInt64
    /// `dirtyExtents` in bytes.
    public var lagBytes: UInt64
    public var frameSize: UInt32
    /// A connection to the target is open now.
    public var connected: Bool
    /// The resync job working on the mirror now, or the last one.
    public var job: JobDTO?
    public var lastError: String?
    /// Fractures since the daemon started.
    public var fractures: UInt64
    /// Frames sent again (timeouts, checksum failures) since the daemon started.
    public var retransmissions: UInt64
    /// Data bytes the target acknowledged since the daemon started.
    public var bytesReplicated: UInt64
    /// Generation identifiers (hex): the pair, the primary's current data, the last both sides agreed on.
    public var pairID: String
    public var generation: String
    public var syncedGeneration: String
    /// "synchronous", or "asynchronous" (host writes complete once local; see `asynchronousLagLimit`).
    public var mode: String?
    /// Asynchronous mode: most bytes the target may not have acknowledged (lost if the primary is lost).
    public var asynchronousLagLimit: UInt64?
    /// Asynchronous mode: bytes not yet acknowledged by the target now.
    public var unacknowledgedBytes: UInt64?
    /// Data bytes per second the target acknowledged recently (the last few seconds).
    public var throughputBytesPerSecond: UInt64?
    /// "primary" here; the target's side is listed by GET /v1/mirror-targets.
    public var role: String?
    /// `re-establish --take-target-changes` is copying the target's changes here; `pullExtents` remain.
    public var takingTargetChanges: Bool?
    public var pullExtents: UInt64?
    /// The last completed resync since the daemon started: extents compared by digest (`--checksum`),
    /// sent, skipped as equal, and taken from the target.
    public var lastResync: MirrorResyncResultDTO?

    public init(
        volume: String, target: String, state: String, extentSize: UInt64, extentCount: UInt64, changedExtents: UInt64,
        dirtyExtents: UInt64, lagBytes: UInt64, frameSize: UInt32, connected: Bool, job: JobDTO?, lastError: String?,
        fractures: UInt64, retransmissions: UInt64, bytesReplicated: UInt64, pairID: String, generation: String,
        syncedGeneration: String
    ) {
        self.volume = volume
        self.target = target
        self.state = state
        self.extentSize = extentSize
        self.extentCount = extentCount
        self.changedExtents = changedExtents
        self.dirtyExtents = dirtyExtents
        self.lagBytes = lagBytes
        self.frameSize = frameSize
        self.connected = connected
        self.job = job
        self.lastError = lastError
        self.fractures = fractures
        self.retransmissions = retransmissions
        self.bytesReplicated = bytesReplicated
        self.pairID = pairID
        self.generation = generation
        self.syncedGeneration = syncedGeneration
    }
}

/// What a completed resync did.
public struct MirrorResyncResultDTO: Codable, Sendable, Hashable {
    public var compared: UInt64
    public var sent: UInt64
    public var skipped: UInt64
    public var pulled: UInt64

    public init(compared: UInt64, sent: UInt64, skipped: UInt64, pulled: UInt64) {
        self.compared = compared
        self.sent = sent
        self.skipped = skipped
        self.pulled = pulled
    }
}

/// POST /v1/mirrors: mirror `volume` to `target` (HOST:PORT/VOLUME) and start the initial sync.
public struct EstablishMirrorRequest: Codable, Sendable {
    public var volume: String
    public var target: String
    /// Bytes per change-map bit (power of two, 4 KiB to 1 GiB; default 1 MiB).
    public var extentSize: UInt64?
    /// Overwrite what the target volume holds (it already has data, or belongs to another pairing).
    public var discardTargetChanges: Bool?
    /// ASYNCHRONOUS mode: host writes complete once local, with at most this many bytes in flight to the
    /// target. nil: synchronous (the default).
    public var asynchronousLag: UInt64?

    public init(
        volume: String, target: String, extentSize: UInt64? = nil, discardTargetChanges: Bool? = nil,
        asynchronousLag: UInt64? = nil
    ) {
        self.asynchronousLag = asynchronousLag
        self.volume = volume
        self.target = target
        self.extentSize = extentSize
        self.discardTargetChanges = discardTargetChanges
    }
}

/// POST /v1/mirrors/{volume}/re-establish
public struct ReestablishMirrorRequest: Codable, Sendable {
    /// The target was written while apart: overwrite its changes with the primary's data.
    public var discardTargetChanges: Bool?
    /// The target was written while apart (or promoted): copy its changed extents here first.
    public var takeTargetChanges: Bool?
    /// Compare SHA-256 digests per extent and send only the extents that differ (DRBD's csums-alg).
    public var checksum: Bool?

    public init(discardTargetChanges: Bool? = nil, takeTargetChanges: Bool? = nil, checksum: Bool? = nil) {
        self.discardTargetChanges = discardTargetChanges
        self.takeTargetChanges = takeTargetChanges
        self.checksum = checksum
    }
}

/// POST /v1/mirrors/{volume}/frame-size
public struct MirrorFrameSizeRequest: Codable, Sendable {
    public var bytes: UInt32
    public init(bytes: UInt32) { self.bytes = bytes }
}

/// POST /v1/mirrors/{volume}/resize: both sides together.
public struct MirrorResizeRequest: Codable, Sendable {
    public var size: UInt64
    /// Required to shrink (data past the new end is lost on both sides).
    public var force: Bool?
    public init(size: UInt64, force: Bool? = nil) {
        self.size = size
        self.force = force
    }
}

/// GET /v1/mirrors/{volume}/target: the target daemon's answer to a status frame.
public struct MirrorTargetStatusDTO: Codable, Sendable, Hashable {
    public struct Volume: Codable, Sendable, Hashable {
        public var name: String
        public var size: UInt64
        public var allocatedBytes: UInt64
        /// "target" or "none".
        public var role: String
        /// mirrored, fractured, severed, or "" for an unpaired volume.
        public var state: String
        public var full: Bool
        public var failed: Bool

        public init(name: String, size: UInt64, allocatedBytes: UInt64, role: String, state: String, full: Bool, failed: Bool) {
            self.name = name
            self.size = size
            self.allocatedBytes = allocatedBytes
            self.role = role
            self.state = state
            self.full = full
            self.failed = failed
        }
    }

    public var availableBytes: UInt64
    public var volumes: [Volume]

    public init(availableBytes: UInt64, volumes: [Volume]) {
        self.availableBytes = availableBytes
        self.volumes = volumes
    }
}

/// GET /v1/mirror-targets: the volumes of this daemon that other daemons mirror to (its target side).
public struct MirrorTargetPairingDTO: Codable, Sendable, Hashable {
    public var volume: String
    /// The primary daemon's node name.
    public var primaryNode: String
    /// mirrored (a primary is connected), fractured (paired, no primary connected), severed.
    public var state: String
    /// Read-only to hosts (paired and not severed).
    public var readOnly: Bool
    /// Written by a host while severed: re-establishing needs --discard-target-changes on the primary.
    public var modified: Bool
    /// The generation this volume fully holds (hex; 0 until the first sync completed).
    public var generation: String
    /// Promoted here (failover): writable by hosts, its primary fenced off.
    public var promoted: Bool?
    /// While promoted: the generation its own data started (hex).
    public var promotedGeneration: String?
    /// Extents hosts wrote here while severed or promoted (what --take-target-changes copies back).
    public var changedExtents: UInt64?

    public init(volume: String, primaryNode: String, state: String, readOnly: Bool, modified: Bool, generation: String) {
        self.volume = volume
        self.primaryNode = primaryNode
        self.state = state
        self.readOnly = readOnly
        self.modified = modified
        self.generation = generation
    }
}

extension APIPath {
    public static let mirrorTargets = "/v1/mirror-targets"
    public static let mirrors = "/v1/mirrors"
    public static func mirror(_ volume: String) -> String { "/v1/mirrors/\(component(volume))" }
    /// sever, re-establish, frame-size, target, promote.
    public static func mirrorAction(_ volume: String, _ action: String) -> String { mirror(volume) + "/" + action }
}
