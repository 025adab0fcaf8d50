import CairnEngine
import CairnIO
import Foundation
import Synchronization

/// A pool in a Ceph RADOS pool: the metadata database through Ceph's SQLite VFS
/// (`metadata.db`, striped over RADOS objects) and each slot file striped over objects of
/// `objectSize` bytes (`RadosSlotFile`). Opening the media takes the pool's ownership (the header
/// lock), so only one node serves a pool; see `PoolOwnership`.
public final class RadosMedia: PoolMedia {
    public let location: String
    public let cluster: RadosCluster
    public let io: RadosIOContext
    public let objectSize: UInt64
    public let ownership: PoolOwnership
    private let usageCache = Mutex<(at: Date, available: UInt64?)?>(nil)

    /// Object size for slot files: see docs/ARCHITECTURE.md, "The pool on RADOS", for the measurement.
    public static let defaultObjectSize: UInt64 = 1 << 20
    /// The metadata database's name inside the pool's namespace.
    public static let metadataName = "metadata.db"
    /// The metadata journal's objects (`metadata.journal.<index>`), beside the metadata database.
    public static let journalName = "metadata.journal"
    /// The metadata database's own lock, which a fenced owner may still hold.
    static let fencedLocks = [CephSQLiteVFS.lockObject(ofDatabase: metadataName)]
    /// How long a fullness reading is reused: the engine asks at every allocation, the monitors
    /// update their statistics every few seconds anyway.
    static let usageCacheSeconds = 2.0

    /// Connects, loads the SQLite VFS and takes the pool (`PoolOwnership.acquire`): fails with
    /// `.poolLocked` while another node's lease is live, and fences the last owner otherwise.
    public init(
        _ configuration: RadosConfiguration, objectSize: UInt64 = RadosMedia.defaultObjectSize,
        leaseSeconds: Int = PoolOwnership.defaultLeaseSeconds, log: (String) -> Void = { _ in }
    ) throws {
        cluster = try RadosCluster(configuration)
        io = try cluster.ioContext()
        self.objectSize = objectSize
        location = configuration.location
        let addresses = [try cluster.address(), try CephSQLiteVFS.load(configuration)]
        ownership = try PoolOwnership.acquire(
            io, clientAddresses: addresses, leaseSeconds: leaseSeconds, fencedLocks: Self.fencedLocks, log: log)
    }

    init(cluster: RadosCluster, io: RadosIOContext, objectSize: UInt64, ownership: PoolOwnership) {
        self.cluster = cluster
        self.io = io
        self.objectSize = objectSize
        self.ownership = ownership
        location = cluster.configuration.location
    }

    /// The SQLite store through the ceph VFS, whose commits count only while this node owns the pool
    /// (`OwnedMetadataStore`: the VFS does not report a fenced client's failed writes).
    public func openMetadataStore() throws -> any MetadataStore {
        OwnedMetadataStore(
            base: try SQLiteMetadataStore(path: CephSQLiteVFS.uri(cluster.configuration, name: Self.metadataName)),
            ownership: ownership)
    }

    /// The metadata journal is objects in the cluster like the slot files, so a standby that takes the
    /// pool over replays what the old owner appended.
    public func openMetadataJournal() throws -> any StorageFile {
        do {
            return try RadosSlotFile(io: io, name: Self.journalName, objectSize: objectSize)
        } catch let error as RadosError {
            throw EngineError(.ioFailure, "cannot open the metadata journal in \(location)", cause: error)
        }
    }

    /// A store (another directory on a local pool) becomes a name prefix: all slot files of a RADOS pool
    /// live in its RADOS pool.
    public func openSlotFile(named name: String, in store: String?) throws -> any StorageFile {
        let objectName = store.map { "store:\($0)/\(name)" } ?? name
        do {
            return try RadosSlotFile(io: io, name: objectName, objectSize: objectSize)
        } catch let error as RadosError {
            throw EngineError(.ioFailure, "cannot open slot file \(objectName) in \(location)", cause: error)
        }
    }

    public func prepareStore(at path: String) throws {}

    public func probeCopyMethod() -> CopyMethod { .userspace }

    /// What the cluster can still take, as `ceph df` reports it (raw space: one replica per byte in
    /// the size-1 pools of a test cluster, fewer bytes of data with replication).
    public func availableBytes() -> UInt64? {
        if let cached = usageCache.withLock({ $0 }), Date().timeIntervalSince(cached.at) < Self.usageCacheSeconds {
            return cached.available
        }
        let available = try? cluster.usage().availableBytes
        usageCache.withLock { $0 = (Date(), available) }
        return available
    }
}

extension RadosMedia {
    /// A standby: connects, then waits until the serving node's lease lapses, fences that node and takes
    /// the pool (`PoolOwnership.waitToAcquire`).
    public static func standby(
        _ configuration: RadosConfiguration, objectSize: UInt64 = RadosMedia.defaultObjectSize,
        leaseSeconds: Int = PoolOwnership.defaultLeaseSeconds, log: @escaping (String) -> Void = { _ in }
    ) throws -> RadosMedia {
        let cluster = try RadosCluster(configuration)
        let io = try cluster.ioContext()
        let addresses = [try cluster.address(), try CephSQLiteVFS.load(configuration)]
        guard
            let ownership = try PoolOwnership.waitToAcquire(
                io, clientAddresses: addresses, leaseSeconds: leaseSeconds, fencedLocks: fencedLocks, log: log)
        else { throw EngineError(.busy, "stopped standing by") }
        log("took over the pool in \(configuration.location)")
        return RadosMedia(cluster: cluster, io: io, objectSize: objectSize, ownership: ownership)
    }
}
