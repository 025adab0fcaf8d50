/// Where a pool's bytes live, in GET /v1/pool: a local directory, or a Ceph RADOS pool with the
/// cluster's health and fullness.
public struct PoolBackendDTO: Codable, Sendable, Hashable {
    /// "directory" or "rados".
    public var kind: String
    /// "/var/lib/cairn" or "rados:pool/namespace".
    public var location: String
    /// The cluster's health ("HEALTH_OK", "HEALTH_WARN", "HEALTH_ERR"; "unreachable: …" when the
    /// monitors did not answer).
    public var clusterHealth: String?
    public var clusterTotalBytes: UInt64?
    public var clusterUsedBytes: UInt64?
    public var clusterAvailableBytes: UInt64?
    /// Bytes of one slot-file object.
    public var objectSize: UInt64?
    /// This node's ownership of the pool: "held (lease 15 s)", or why it was lost.
    public var ownership: String?

    public init(
        kind: String, location: String, clusterHealth: String? = nil, clusterTotalBytes: UInt64? = nil,
        clusterUsedBytes: UInt64? = nil, clusterAvailableBytes: UInt64? = nil, objectSize: UInt64? = nil,
        ownership: String? = nil
    ) {
        self.kind = kind
        self.location = location
        self.clusterHealth = clusterHealth
        self.clusterTotalBytes = clusterTotalBytes
        self.clusterUsedBytes = clusterUsedBytes
        self.clusterAvailableBytes = clusterAvailableBytes
        self.objectSize = objectSize
        self.ownership = ownership
    }
}
