import ArgumentParser
import CairnDaemon
import CairnRADOS
import Foundation

/// The flags that put the pool on a Ceph cluster (`cairn serve --ceph-conf F --rados-pool P ...`).
struct RadosFlags: ParsableArguments {
    @Option(name: .long, help: "Ceph configuration file: serve a pool stored in RADOS instead of --data-dir.")
    var cephConf: String?

    @Option(name: .long, help: "Ceph client id, without 'client.' (default: admin).")
    var cephId: String?

    @Option(name: .long, help: "Keyring holding the Ceph client's key (default: the one the configuration names).")
    var cephKeyring: String?

    @Option(name: .long, help: "RADOS pool holding the Cairn pool's objects.")
    var radosPool: String?

    @Option(name: .long, help: "RADOS namespace inside that pool (several Cairn pools can share one RADOS pool).")
    var radosNamespace: String?

    @Option(name: .long, help: "Seconds this node's hold on the pool lasts without renewal (default 15).")
    var radosLeaseSeconds: Int?

    @Flag(
        name: .long,
        help: "Stand by: wait until the node serving the RADOS pool stops renewing its lease, fence it, take over and serve.")
    var standby = false
}

extension ServeCommand {
    /// The RADOS settings, the file's `rados:` section under the flags, checked.
    func applyRadosFlags(file: ServeConfigFile.Rados?, to daemon: inout DaemonConfiguration) throws {
        let conf = rados.cephConf ?? file?.conf
        let pool = rados.radosPool ?? file?.pool
        let standby = rados.standby || (file?.standby ?? false)
        guard let conf else {
            let stray = [rados.cephId, rados.cephKeyring, rados.radosPool, rados.radosNamespace].contains { $0 != nil }
            if stray || standby || rados.radosLeaseSeconds != nil {
                throw ConfigError("the Ceph options need --ceph-conf (or rados.conf in the configuration file)")
            }
            return
        }
        guard let pool, !pool.isEmpty else { throw ConfigError("a pool on Ceph needs --rados-pool (or rados.pool)") }
        guard FileManager.default.isReadableFile(atPath: conf) else { throw ConfigError("cannot read \(conf)") }
        let keyring = rados.cephKeyring ?? file?.keyring
        if let keyring, !FileManager.default.isReadableFile(atPath: keyring) {
            throw ConfigError("cannot read the keyring \(keyring)")
        }
        let namespace = rados.radosNamespace ?? file?.namespace ?? ""
        // The SQLite VFS names the database "pool:namespace/name": its characters only.
        let allowed = CharacterSet.alphanumerics.union(CharacterSet(charactersIn: "-_."))
        for (what, value) in [("pool", pool), ("namespace", namespace)]
        where value.unicodeScalars.contains(where: { !allowed.contains($0) }) {
            throw ConfigError("the RADOS \(what) '\(value)' may hold only letters, digits, '-', '_' and '.'")
        }
        let lease = rados.radosLeaseSeconds ?? file?.leaseSeconds ?? PoolOwnership.defaultLeaseSeconds
        guard (3...600).contains(lease) else { throw ConfigError("the RADOS lease must be 3...600 seconds") }
        daemon.rados = RadosConfiguration(
            confPath: conf, clientID: rados.cephId ?? file?.id ?? "admin", keyringPath: keyring, pool: pool,
            namespace: namespace)
        daemon.standby = standby
        daemon.radosLeaseSeconds = lease
    }

    static func describeRados(_ daemon: DaemonConfiguration) -> String {
        guard let rados = daemon.rados else { return "off (the pool is in the data directory)" }
        return "\(rados.location) via \(rados.confPath) as client.\(rados.clientID), lease \(daemon.radosLeaseSeconds) s"
            + (daemon.standby ? ", standby" : "")
    }
}
