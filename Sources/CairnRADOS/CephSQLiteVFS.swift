import Foundation
import Synchronization
import GRDB
import GRDBSQLite

/// Ceph's SQLite VFS (libcephsqlite): a SQLite database striped over RADOS objects. Loaded once per
/// process into the system SQLite that GRDB uses; databases then open as
/// `file:///<pool>:<namespace>/<name>?vfs=ceph` (SQLite is built with URI filenames on Debian).
///
/// The VFS makes its own librados client from `CEPH_ARGS`, once per process: a process reaches one
/// cluster under one identity through it.
///
/// That client is made lazily and without a lock by libcephsqlite 16.2 (`getcct`): the first caller
/// publishes the VFS's CephContext *before* it creates and connects the client, so a second thread
/// entering the VFS meanwhile finds the context, skips the set-up and uses a `librados::Rados` whose
/// client is still null (a read at address 0xc30 in `RadosClient::get_instance_id`, from
/// `ceph_status()` or any logged VFS call), and two first callers at once both set up the same handle.
/// `load` therefore makes the client itself, under its lock, before any database or function of the
/// VFS can be reached: every user of the VFS calls `load` first and waits there until it is done.
public enum CephSQLiteVFS {
    /// The shared object Debian's libsqlite3-mod-ceph installs.
    static let library = "libcephsqlite.so"

    /// The VFS client's address once `load` has connected it (nil: not loaded yet).
    private static let loaded = Mutex<String?>(nil)

    /// Registers the "ceph" VFS (idempotent) with the cluster of `configuration` and connects its
    /// client; returns that client's address ("127.0.0.1:0/1234"), which a node taking over must fence.
    @discardableResult
    public static func load(_ configuration: RadosConfiguration) throws -> String {
        try CephEnvironment.withEnvironment(configuration) { try loadOnce() }
    }

    private static func loadOnce() throws -> String {
        try loaded.withLock { loaded in
            if let address = loaded { return address }
            var connection: OpaquePointer?
            guard sqlite3_open_v2(":memory:", &connection, SQLITE_OPEN_READWRITE, nil) == SQLITE_OK else {
                throw RadosError("load the SQLite VFS", library, result: -ENOMEM)
            }
            defer { sqlite3_close(connection) }
            sqlite3_enable_load_extension(connection, 1)
            var message: UnsafeMutablePointer<CChar>?
            let result = sqlite3_load_extension(connection, library, "sqlite3_cephsqlite_init", &message)
            guard result == SQLITE_OK else {
                let reason = message.map { String(cString: $0) } ?? "code \(result)"
                sqlite3_free(message)
                throw VFSLoadError(reason: "cannot load \(library) (apt-get install libsqlite3-mod-ceph): \(reason)")
            }
            guard sqlite3_vfs_find("ceph") != nil else {
                throw VFSLoadError(reason: "\(library) loaded but registered no 'ceph' VFS")
            }
            sqlite3_auto_extension(unsafeBitCast(exclusiveLockingOnCeph, to: (@convention(c) () -> Void).self))
            // The VFS's first call sets its client up (see above): made here, under the lock.
            let address = try statusAddress()
            loaded = address
            return address
        }
    }

    /// Runs at every SQLite connection's open (`sqlite3_auto_extension`): a database on the ceph VFS gets
    /// `locking_mode = EXCLUSIVE` before anything else, so the metadata store's `journal_mode = WAL`
    /// takes effect (WAL without shared memory needs exclusive locking) and the VFS takes its RADOS lock
    /// once instead of at every transaction. Measured: a commit in 6 ms instead of 52 ms (rollback
    /// journal, PERSIST) — docs/ARCHITECTURE.md, "The pool on RADOS". One writer per pool is the rule
    /// anyway; a node taking over breaks the fenced owner's lock (`PoolOwnership`).
    private static let exclusiveLockingOnCeph:
        @convention(c) (OpaquePointer?, UnsafeMutablePointer<UnsafePointer<CChar>?>?, OpaquePointer?) -> Int32 = {
            connection, _, _ in
            var name: UnsafeMutablePointer<CChar>?
            guard sqlite3_file_control(connection, "main", SQLITE_FCNTL_VFSNAME, &name) == SQLITE_OK, let name else {
                return SQLITE_OK
            }
            defer { sqlite3_free(name) }
            if String(cString: name).hasPrefix("ceph") {
                return sqlite3_exec(connection, "PRAGMA locking_mode = EXCLUSIVE", nil, nil, nil)
            }
            return SQLITE_OK
        }

    /// The object holding the VFS's own lock for database `name` (its first stripe) and the lock's name:
    /// a node taking over breaks the fenced owner's hold on it.
    public static func lockObject(ofDatabase name: String) -> (object: String, lock: String) {
        (name + ".0000000000000000", "striper.lock")
    }

    /// The URI of database `name` in the configured pool and namespace.
    public static func uri(_ configuration: RadosConfiguration, name: String) -> String {
        "file:///\(configuration.pool):\(configuration.namespace)/\(name)?vfs=ceph"
    }

    /// Loading the VFS failed.
    public struct VFSLoadError: Error, CustomStringConvertible {
        public var reason: String
        public var description: String { reason }
    }
}

extension CephSQLiteVFS {
    /// Asks the VFS's `ceph_status()` SQL function for its client's address; the first call connects
    /// the client (only `loadOnce` calls this, under its lock).
    private static func statusAddress() throws -> String {
        var connection: OpaquePointer?
        guard sqlite3_open_v2(":memory:", &connection, SQLITE_OPEN_READWRITE, nil) == SQLITE_OK else {
            throw VFSLoadError(reason: "cannot open an SQLite connection")
        }
        defer { sqlite3_close(connection) }
        var statement: OpaquePointer?
        guard sqlite3_prepare_v2(connection, "SELECT ceph_status()", -1, &statement, nil) == SQLITE_OK else {
            throw VFSLoadError(reason: "ceph_status(): \(String(cString: sqlite3_errmsg(connection)))")
        }
        defer { sqlite3_finalize(statement) }
        guard sqlite3_step(statement) == SQLITE_ROW, let text = sqlite3_column_text(statement, 0) else {
            throw VFSLoadError(reason: "ceph_status(): \(String(cString: sqlite3_errmsg(connection)))")
        }
        let json = String(cString: text)
        guard let object = try? JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any],
            let address = object["addr"] as? String
        else { throw VFSLoadError(reason: "ceph_status() returned no address: \(json)") }
        return RadosCluster.plainAddress(address)
    }
}
