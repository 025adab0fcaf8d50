import CRados
import Foundation

/// How to reach a Ceph cluster and which pool holds Cairn's objects.
public struct RadosConfiguration: Sendable, Equatable, Codable {
    /// ceph.conf (monitor addresses and client options).
    public var confPath: String
    /// The cephx client id without the "client." prefix ("admin").
    public var clientID: String
    /// Keyring holding the client's key (nil: the one ceph.conf names).
    public var keyringPath: String?
    /// RADOS pool holding the Cairn pool's objects.
    public var pool: String
    /// Namespace inside the RADOS pool: several Cairn pools can share one RADOS pool.
    public var namespace: String
    /// Longest wait for the monitors at connect and for one OSD operation, in seconds.
    public var timeoutSeconds: Int

    /// Default for `timeoutSeconds`: long enough for a monitor election on a loaded cluster, short enough
    /// that an unreachable cluster at start is an error in seconds rather than librados' 300 s.
    public static let defaultTimeoutSeconds = 15

    public init(
        confPath: String, clientID: String = "admin", keyringPath: String? = nil, pool: String,
        namespace: String = "", timeoutSeconds: Int = RadosConfiguration.defaultTimeoutSeconds
    ) {
        self.confPath = confPath
        self.clientID = clientID
        self.keyringPath = keyringPath
        self.pool = pool
        self.namespace = namespace
        self.timeoutSeconds = timeoutSeconds
    }

    /// "pool" or "pool/namespace" (for messages).
    public var location: String { namespace.isEmpty ? "rados:\(pool)" : "rados:\(pool)/\(namespace)" }
}

/// A connected librados client (one `rados_t`). Thread-safe: librados handles are.
public final class RadosCluster: @unchecked Sendable {
    let handle: rados_t
    public let configuration: RadosConfiguration

    /// Connects to the cluster; fails within `timeoutSeconds` when the monitors cannot be reached.
    public init(_ configuration: RadosConfiguration) throws {
        self.configuration = configuration
        var cluster: rados_t?
        let created = CephEnvironment.withEnvironment(configuration) {
            rados_create2(&cluster, "ceph", "client." + configuration.clientID, 0)
        }
        try check(created, "create", "client.\(configuration.clientID)")
        handle = cluster!
        // Every stored property is set: a throw from here on runs deinit, which shuts the handle down.
        guard FileManager.default.isReadableFile(atPath: configuration.confPath) else {
            throw RadosError("read configuration", configuration.confPath, result: -ENOENT)
        }
        try check(rados_conf_read_file(handle, configuration.confPath), "read configuration", configuration.confPath)
        if let keyring = configuration.keyringPath {
            guard FileManager.default.isReadableFile(atPath: keyring) else {
                throw RadosError("read keyring", keyring, result: -ENOENT)
            }
            try set("keyring", keyring)
        }
        let timeout = String(configuration.timeoutSeconds)
        try set("client_mount_timeout", timeout)
        try set("rados_mon_op_timeout", timeout)
        // An OSD that stays away fails the operation (an I/O error to the client) instead of
        // hanging a thread of the I/O executor forever; a shorter outage (an OSD restart) is a stall.
        try set("rados_osd_op_timeout", String(max(configuration.timeoutSeconds, Self.osdOperationTimeoutSeconds)))
        try check(rados_connect(handle), "connect", "the cluster in \(configuration.confPath)")
    }

    deinit { rados_shutdown(handle) }

    /// How long one OSD operation may wait for its OSD: a restart or a PG peering is a stall, not an
    /// error (a failed write fails the pool's next commit, which stops the pool until it is reopened);
    /// an OSD gone for longer turns into I/O errors.
    public static let osdOperationTimeoutSeconds = 120

    private func set(_ option: String, _ value: String) throws {
        try check(rados_conf_set(handle, option, value), "set \(option)", configuration.confPath)
    }

    /// An I/O context on `pool` (default: the configured one) in the configured namespace.
    public func ioContext(pool: String? = nil) throws -> RadosIOContext {
        try RadosIOContext(cluster: self, pool: pool ?? configuration.pool, namespace: configuration.namespace)
    }

    /// This client's address as the cluster sees it ("127.0.0.1:0/1234567"): what a blocklist names.
    public func address() throws -> String {
        var addrs: UnsafeMutablePointer<CChar>?
        try check(rados_getaddrs(handle, &addrs), "getaddrs", "client")
        defer { rados_buffer_free(addrs) }
        return Self.plainAddress(String(cString: addrs!))
    }

    /// "[v2:127.0.0.1:0/123,v1:...]" or "v2:127.0.0.1:0/123" → "127.0.0.1:0/123".
    static func plainAddress(_ text: String) -> String {
        var value = text.trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
        if let comma = value.firstIndex(of: ",") { value = String(value[..<comma]) }
        for prefix in ["v2:", "v1:", "any:"] where value.hasPrefix(prefix) { value.removeFirst(prefix.count) }
        return value
    }

    /// This client's global id: lockers are listed as "client.<id>".
    public var instanceID: UInt64 { rados_get_instance_id(handle) }

    /// Fences a client: the OSDs refuse every operation from `address` until `seconds` pass (0: the
    /// cluster's default, one hour). Returns once the monitors have committed the entry and this
    /// client has seen the OSD map that holds it.
    public func blocklist(address: String, seconds: UInt32 = 0) throws {
        // librados takes the address as a mutable C string.
        guard let copy = strdup(address) else { throw RadosError("blocklist add", address, result: -ENOMEM) }
        defer { free(copy) }
        try check(rados_blocklist_add(handle, copy, seconds), "blocklist add", address)
        try check(rados_wait_for_latest_osdmap(handle), "wait for osdmap", address)
    }

    /// Capacity of the cluster (all pools), as `ceph df` reports it.
    public func usage() throws -> (totalBytes: UInt64, usedBytes: UInt64, availableBytes: UInt64) {
        var stat = rados_cluster_stat_t()
        try check(rados_cluster_stat(handle, &stat), "cluster stat", configuration.confPath)
        return (stat.kb << 10, stat.kb_used << 10, stat.kb_avail << 10)
    }

    /// The monitors' health summary ("HEALTH_OK", "HEALTH_WARN", "HEALTH_ERR").
    public func health() throws -> String {
        let reply = try monCommand(#"{"prefix": "health", "format": "json"}"#)
        guard let object = try? JSONSerialization.jsonObject(with: Data(reply.utf8)) as? [String: Any],
            let status = object["status"] as? String
        else { throw RadosError("health", "monitor reply \(reply.prefix(80))", result: -EINVAL) }
        return status
    }

    /// Runs one monitor command (JSON) and returns its output.
    public func monCommand(_ json: String) throws -> String {
        var out: UnsafeMutablePointer<CChar>?
        var outLength = 0
        var status: UnsafeMutablePointer<CChar>?
        var statusLength = 0
        let result = json.withCString { command -> Int32 in
            var commands: [UnsafePointer<CChar>?] = [command]
            return rados_mon_command(handle, &commands, 1, nil, 0, &out, &outLength, &status, &statusLength)
        }
        defer {
            if out != nil { rados_buffer_free(out) }
            if status != nil { rados_buffer_free(status) }
        }
        try check(result, "mon command", json)
        guard let out, outLength > 0 else { return "" }
        return String(decoding: UnsafeRawBufferPointer(start: out, count: outLength), as: UTF8.self)
    }
}
