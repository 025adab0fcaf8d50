import CairnIO
import Foundation
import Logging
import Synchronization

/// `pool.stores`: preserve stores, the directories on other disks where a volume's snapshot-held data
/// goes when the live volume overwrites it, and the copy-out that moves it there (`+CopyOut`, the
/// COW-offload design). Store records live in `PoolState.stores`, under the pool mutex; `inUse` is its
/// own, read without the mutex on every host write.
///
/// Core calls it uses: `monitor` and `state`, `checkWritable()`, `flush()`, `media.prepareStore`,
/// `slotFile(forChunkSize:store:)`, `checkSpace`, and the slot `files` it copies between. The core's
/// write path calls `copyOutBeforeWrite` before it plans a write.
public final class StoreCatalog: Sendable {
    unowned let pool: Pool
    /// Some volume has (or had, since open) a preserve store: writes must check for copy-out.
    let inUse = Atomic<Bool>(false)

    init(pool: Pool) { self.pool = pool }

    /// Writes from now on check for copy-out (a volume got a preserve store).
    func noteInUse() { inUse.store(true, ordering: .relaxed) }

    /// Registers another directory (typically on another disk) that can hold slot files. The directory
    /// is created if missing and must be writable.
    public func add(name: String, path: String) throws {
        try NameRules.validate(name, what: "store")
        guard path.hasPrefix("/") else {
            throw EngineError(.invalidArgument, "a store path must be absolute, not '\(NameRules.printable(path))'")
        }
        guard !path.contains("\0"), path.utf8.count < 4096 else {
            throw EngineError(.invalidArgument, "that store path is not usable")
        }
        try pool.media.prepareStore(at: path)
        try pool.monitor.withLock {
            try pool.checkWritable()
            guard pool.state.stores[name] == nil else {
                throw EngineError(.alreadyExists, "store '\(name)' already exists")
            }
            guard !pool.state.stores.values.contains(where: { $0.path == path }) else {
                throw EngineError(.alreadyExists, "\(path) is already a store")
            }
            let record = StoreRecord(name: name, path: path)
            pool.state.stores[name] = record
            pool.state.dirty.stores.append(record)
        }
        try pool.flush()
        pool.logger.info("store added", metadata: ["store": "\(name)", "path": "\(path)"])
    }

    public func list() -> [StoreRecord] {
        pool.monitor.withLock { pool.state.stores.values.sorted { $0.name < $1.name } }
    }

    /// Sends the data a volume preserves for its snapshots to `store` (nil: keep it in the pool). Takes
    /// effect for chunks first overwritten from now on.
    public func setPreserveStore(volume name: String, store: String?) throws {
        try pool.monitor.withLock {
            try pool.checkWritable()
            let volume = try pool.state.volume(named: name)
            if let store, pool.state.stores[store] == nil {
                throw EngineError(.notFound, "store '\(store)' does not exist; add it with `cairn pool store add`")
            }
            volume.record.preserveStore = store
            pool.state.dirty.volumes.insert(volume.id)
            if store != nil { noteInUse() }
        }
        try pool.flush()
    }
}

extension EngineError.Code {
    /// The filesystem refused access.
    public static let permissionDenied = EngineError.Code(rawValue: "permission_denied")
}
