import NIOCore

/// How the replication layer behaves (`cairn serve` flags).
public struct ReplicationSettings: Sendable {
    /// Proves this node to targets and primaries to this node; nil: mirroring is not configured.
    public var secret: ReplicationSecret?
    /// This node's name in the target's logs and status.
    public var node: String
    /// Seconds a frame may go unanswered before it is sent again. DRBD's `timeout` defaults to 6 s; 5 s
    /// keeps a host write's worst stall (timeout × (retries + 1)) near half a minute, under the 30 s most
    /// guests' disk timeouts allow.
    public var frameTimeout: Double = 5
    /// Retransmissions before the mirror fractures (a predetermined number of re-sends).
    public var retries: Int = 3
    /// Least time an establish may take to be answered, whatever `frameTimeout` is. The target answers it
    /// after durable work (the volume, its change map and the pairing record, each synced), which on a
    /// host busy writing back waits behind everyone's dirty data; the frame timeout is for noticing a
    /// stalled link under host writes, and holds no host write back here.
    public static let establishTimeoutFloor: Double = 30

    /// How long an establish frame may go unanswered.
    var establishTimeout: Double { max(frameTimeout, Self.establishTimeoutFloor) }
    /// Seconds between activity-log checkpoints (both sides flush; idle extents' bits are cleared).
    public var checkpointInterval: Double = 2
    /// Run on fracture (`sh -c`), with CAIRN_MIRROR_VOLUME, CAIRN_MIRROR_TARGET and CAIRN_MIRROR_ERROR set.
    public var alertCommand: String?
    public var group: any EventLoopGroup
    /// Pause after each extent a resync copies: a rate limit (and what lets a test act mid-resync); 0: none.
    public var resyncExtentDelay: Double = 0
    /// TLS on the link (both roles); nil: plain TCP, authenticated by the secret only.
    public var tls: ReplicationTLS?

    public init(secret: ReplicationSecret?, node: String, group: any EventLoopGroup) {
        self.secret = secret
        self.node = node
        self.group = group
    }

    /// Extents a resync copies at once: enough to keep the link busy while one waits on the disk.
    static let resyncConcurrency = 4
    /// Extents between two resync checkpoints (target flush, then the copied bits are cleared durably):
    /// what an interrupted resync copies again at most.
    static let resyncBatch = 64
    /// Default bytes per change-map bit: 1 MiB keeps a 1 TiB volume's map at 128 KiB and a 4 KiB write's
    /// resync cost bounded; DRBD's bitmap uses 4 KiB bits and its activity log 4 MiB extents.
    public static let defaultExtentSize: UInt64 = 1 << 20
}
