import Foundation
import Synchronization

/// The process environment librados and Ceph's SQLite VFS read (CEPH_CONF, CEPH_KEYRING, CEPH_ARGS).
/// glibc's setenv is not safe against a concurrent getenv, and librados reads the environment when a
/// client is created: the variables are set once, from the first configuration, and every client is
/// created under this lock.
enum CephEnvironment {
    private static let lock = Mutex<Bool>(false)

    /// Runs `body` (a client's creation) with the environment set for `configuration` the first time.
    static func withEnvironment<T>(_ configuration: RadosConfiguration, _ body: () throws -> T) rethrows -> T {
        try lock.withLock { set in
            if !set {
                // The VFS reads the configuration file from CEPH_CONF, the keyring from CEPH_KEYRING and
                // only the early arguments (the client id) from CEPH_ARGS.
                setenv("CEPH_CONF", configuration.confPath, 1)
                if let keyring = configuration.keyringPath { setenv("CEPH_KEYRING", keyring, 1) }
                setenv("CEPH_ARGS", "--id \(configuration.clientID)", 1)
                set = true
            }
            return try body()
        }
    }
}
