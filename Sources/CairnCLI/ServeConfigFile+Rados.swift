extension ServeConfigFile {
    /// `rados:`: the pool lives in a Ceph RADOS pool (see docs/OPERATIONS.md, "Pools on Ceph").
    struct Rados: Decodable, Equatable {
        var conf: String?
        var id: String?
        var keyring: String?
        var pool: String?
        var namespace: String?
        var leaseSeconds: Int?
        var standby: Bool?
        enum CodingKeys: String, CodingKey, CaseIterable {
            case conf, id, keyring, pool, namespace, standby
            case leaseSeconds = "lease_seconds"
        }
        init(from decoder: any Decoder) throws {
            try rejectUnknownKeys(decoder, CodingKeys.self)
            let c = try decoder.container(keyedBy: CodingKeys.self)
            conf = try c.decodeIfPresent(String.self, forKey: .conf)
            id = try c.decodeIfPresent(String.self, forKey: .id)
            keyring = try c.decodeIfPresent(String.self, forKey: .keyring)
            pool = try c.decodeIfPresent(String.self, forKey: .pool)
            namespace = try c.decodeIfPresent(String.self, forKey: .namespace)
            leaseSeconds = try c.decodeIfPresent(Int.self, forKey: .leaseSeconds)
            standby = try c.decodeIfPresent(Bool.self, forKey: .standby)
        }
    }
}
