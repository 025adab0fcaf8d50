/// GET /v1/pool
public struct PoolStatusDTO: Codable, Sendable, Hashable {
    public var poolID: String
    public var dataDirectory: String
    /// How breaking sharing copies chunks here: reflink, copy_file_range or userspace.
    public var copyMethod: String
    public var volumeCount: Int
    public var provisionedBytes: UInt64
    public var usedBytes: UInt64
    public var sharedBytes: UInt64
    public var pendingFreeBytes: UInt64
    public var fileBytes: UInt64
    public var filesystemAvailableBytes: UInt64?
    /// Set when the pool stopped accepting writes after a durability failure.
    public var failure: String?
    /// "ok", or "failed" once an I/O error on the durability path stopped writes (reads go on; a restart
    /// is required).
    public var health: String
    /// NBD listener, "host:port".
    public var nbdAddress: String?
    /// Slot file I/O since the daemon started (write amplification = (written + copied + zeroed) / host
    /// bytes written).
    public var bytesWritten: UInt64
    public var bytesCopied: UInt64
    public var bytesZeroed: UInt64
    public var bytesRead: UInt64
    /// How data writes reach the disk: "direct" (O_DIRECT), "buffered", or "buffered (O_DIRECT refused)"
    /// where the filesystem does not allow direct I/O (tmpfs). Absent from older daemons.
    public var dataWrites: String?
    /// Where the pool lives (nil from daemons that predate backends: a directory).
    public var backend: PoolBackendDTO?
    /// Slot data carries a CRC-32C per 4 KiB verified on every read (nil from older daemons).
    public var dataChecksums: Bool?
    /// Data blocks found not to match their checksums since the daemon started: each such read failed with
    /// EIO (nil from older daemons).
    public var checksumMismatches: UInt64?
    /// Host writes done on the network event loop (page-cache overwrites needing no wait), and how many
    /// of those the kernel throttled (nil from older daemons).
    public var immediateWrites: UInt64?
    public var immediateWritesThrottled: UInt64?
    /// True when the pool holds data written before it had checksums (read unchecked until rewritten).
    public var uncheckedData: Bool?
    /// Open NBD connections, the iSCSI listener ("host:port") and its logged-in sessions; nil from
    /// daemons that predate them (and the iSCSI fields when iSCSI is off).
    public var nbdConnections: Int?
    public var iscsiAddress: String?
    public var iscsiSessions: [ISCSISessionDTO]?

    public init(
        poolID: String, dataDirectory: String, copyMethod: String, volumeCount: Int, provisionedBytes: UInt64,
        usedBytes: UInt64, sharedBytes: UInt64, pendingFreeBytes: UInt64, fileBytes: UInt64,
        filesystemAvailableBytes: UInt64?, failure: String?, nbdAddress: String?, bytesWritten: UInt64 = 0,
        bytesCopied: UInt64 = 0, bytesZeroed: UInt64 = 0, bytesRead: UInt64 = 0, dataWrites: String? = nil
    ) {
        self.dataWrites = dataWrites
        self.bytesWritten = bytesWritten
        self.bytesCopied = bytesCopied
        self.bytesZeroed = bytesZeroed
        self.bytesRead = bytesRead
        self.poolID = poolID
        self.dataDirectory = dataDirectory
        self.copyMethod = copyMethod
        self.volumeCount = volumeCount
        self.provisionedBytes = provisionedBytes
        self.usedBytes = usedBytes
        self.sharedBytes = sharedBytes
        self.pendingFreeBytes = pendingFreeBytes
        self.fileBytes = fileBytes
        self.filesystemAvailableBytes = filesystemAvailableBytes
        self.failure = failure
        self.health = failure == nil ? Self.healthOK : Self.healthFailed
        self.nbdAddress = nbdAddress
    }
}

extension PoolStatusDTO {
    /// `health` of a pool that accepts writes.
    public static let healthOK = "ok"
    /// `health` of a pool stopped by an I/O error.
    public static let healthFailed = "failed"
}

/// POST /v1/pool/check
public struct PoolCheckDTO: Codable, Sendable, Hashable {
    public var healthy: Bool
    public var volumes: Int
    public var snapshots: Int
    public var mappings: Int
    public var referencedSlots: Int
    public var leakedSlots: Int
    public var leakedBytes: UInt64
    public var repairedSlots: Int
    public var errors: [String]

    public init(
        healthy: Bool, volumes: Int, snapshots: Int, mappings: Int, referencedSlots: Int, leakedSlots: Int,
        leakedBytes: UInt64, repairedSlots: Int, errors: [String]
    ) {
        self.healthy = healthy
        self.volumes = volumes
        self.snapshots = snapshots
        self.mappings = mappings
        self.referencedSlots = referencedSlots
        self.leakedSlots = leakedSlots
        self.leakedBytes = leakedBytes
        self.repairedSlots = repairedSlots
        self.errors = errors
    }
}

/// The body of every error response: `{"error": {"code": "...", "message": "..."}}`.
public struct APIErrorBody: Codable, Sendable, Hashable {
    public struct Detail: Codable, Sendable, Hashable {
        /// Stable machine-readable code (the engine's error codes: not_found, already_exists, ...).
        public var code: String
        /// A sentence a person can act on.
        public var message: String
    }

    public var error: Detail

    public init(code: String, message: String) {
        error = Detail(code: code, message: message)
    }
}

/// Paths of the management API, shared by server and client so they cannot drift apart. Names are
/// percent-encoded as path components: a name is never allowed to carry a query string or another path.
public enum APIPath {
    public static let pool = "/v1/pool"
    public static let poolCheck = "/v1/pool/check"
    /// POST: start a scrub (answers with the job); GET: the last scrub's report.
    public static let poolScrub = "/v1/pool/scrub"
    /// POST: repair the last scrub's damage from mirror targets.
    public static let poolScrubRepair = "/v1/pool/scrub/repair"
    public static let volumes = "/v1/volumes"
    public static func volume(_ name: String) -> String { "/v1/volumes/\(component(name))" }
    public static func snapshots(of volume: String) -> String { "/v1/volumes/\(component(volume))/snapshots" }
    public static func snapshot(_ volume: String, _ name: String) -> String {
        "/v1/volumes/\(component(volume))/snapshots/\(component(name))"
    }
    public static func rollback(_ volume: String, _ name: String) -> String { snapshot(volume, name) + "/rollback" }
    public static func clone(_ volume: String, _ name: String) -> String { snapshot(volume, name) + "/clone" }
    public static func changes(of volume: String) -> String { "/v1/volumes/\(component(volume))/changes" }
    public static let allSnapshots = "/v1/snapshots"
    public static let jobs = "/v1/jobs"
    public static let dedup = "/v1/dedup"
    public static let stores = "/v1/stores"
    public static func job(_ id: UInt64) -> String { "/v1/jobs/\(id)" }
    public static func cancelJob(_ id: UInt64) -> String { "/v1/jobs/\(id)/cancel" }
    public static let health = "/v1/health"
    /// Prometheus text format (not versioned: scrapers are configured with a fixed path).
    public static let metrics = "/metrics"
    /// The read-only status page (HTML) for a browser.
    public static let statusPage = "/status"

    /// Percent-encodes everything but RFC 3986 unreserved characters, so '/', '?', '#', '%' and '@' in a
    /// (bad) name stay inside its path component and the server rejects the name itself.
    public static func component(_ text: String) -> String {
        var out = ""
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"),
                UInt8(ascii: "~"):
                out.unicodeScalars.append(Unicode.Scalar(byte))
            default:
                let hex = Array("0123456789ABCDEF".unicodeScalars)
                out.unicodeScalars.append("%")
                out.unicodeScalars.append(hex[Int(byte >> 4)])
                out.unicodeScalars.append(hex[Int(byte & 0xF)])
            }
        }
        return out
    }

    /// A query parameter value, encoded like a path component.
    public static func query(_ name: String, _ value: String) -> String { "\(name)=\(component(value))" }
}

/// POST /v1/dedup: which volumes to deduplicate (all when empty). Answers with the job.
public struct DedupRequest: Codable, Sendable {
    public var volumes: [String]
    public init(volumes: [String]) { self.volumes = volumes }
}

/// GET /v1/pool/scrub: what the last scrub found (a running scrub's report grows as it goes).
public struct ScrubReportDTO: Codable, Sendable, Hashable {
    /// One damaged 4 KiB block, where hosts see it.
    public struct Damage: Codable, Sendable, Hashable {
        public var volume: String
        /// Byte offset in the volume (and in the snapshots listed).
        public var offset: UInt64
        public var length: UInt64
        /// The live volume reads this block; false: only `snapshots` do.
        public var live: Bool
        public var snapshots: [String]
        /// "file:index" of the slot holding it.
        public var slot: String

        public init(volume: String, offset: UInt64, length: UInt64, live: Bool, snapshots: [String], slot: String) {
            self.volume = volume
            self.offset = offset
            self.length = length
            self.live = live
            self.snapshots = snapshots
            self.slot = slot
        }
    }

    public var job: UInt64
    public var finished: Bool
    public var verifiedBytes: UInt64
    /// Bytes without a checksum yet (written before the pool had checksums).
    public var uncheckedBytes: UInt64
    public var damage: [Damage]

    public init(job: UInt64, finished: Bool, verifiedBytes: UInt64, uncheckedBytes: UInt64, damage: [Damage]) {
        self.job = job
        self.finished = finished
        self.verifiedBytes = verifiedBytes
        self.uncheckedBytes = uncheckedBytes
        self.damage = damage
    }
}

/// POST /v1/pool/scrub/repair: each damaged block of the last scrub, and whether its volume's mirror target
/// gave the good bytes back.
public struct ScrubRepairDTO: Codable, Sendable, Hashable {
    public struct Block: Codable, Sendable, Hashable {
        public var volume: String
        public var offset: UInt64
        public var length: UInt64
        public var repaired: Bool
        /// Why not, when not repaired.
        public var detail: String?

        public init(volume: String, offset: UInt64, length: UInt64, repaired: Bool, detail: String?) {
            self.volume = volume
            self.offset = offset
            self.length = length
            self.repaired = repaired
            self.detail = detail
        }
    }

    public var blocks: [Block]

    public init(blocks: [Block]) { self.blocks = blocks }
}
