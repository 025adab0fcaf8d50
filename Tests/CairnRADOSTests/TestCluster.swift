import CairnRADOS
import Foundation

/// The one-machine cluster scripts/test starts (scripts/ceph-cluster), found through the environment
/// it exports. A test that needs it fails when it is missing: these tests never skip.
enum TestCluster {
    struct Missing: Error, CustomStringConvertible {
        var description: String {
            "CAIRN_CEPH_CONF / CAIRN_CEPH_KEYRING / CAIRN_CEPH_ID / CAIRN_RADOS_POOL are not set: run scripts/test, "
                + "or `scripts/ceph-cluster start DIR` and `source DIR/env`"
        }
    }

    /// A configuration in a fresh namespace of the test pool: each test sees only its own objects.
    static func configuration(namespace: String = "t-" + UUID().uuidString.lowercased()) throws -> RadosConfiguration {
        let environment = ProcessInfo.processInfo.environment
        guard let conf = environment["CAIRN_CEPH_CONF"], let pool = environment["CAIRN_RADOS_POOL"] else {
            throw Missing()
        }
        return RadosConfiguration(
            confPath: conf, clientID: environment["CAIRN_CEPH_ID"] ?? "admin",
            keyringPath: environment["CAIRN_CEPH_KEYRING"], pool: pool, namespace: namespace)
    }
}
