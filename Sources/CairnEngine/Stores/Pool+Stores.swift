import CairnIO
import Foundation
import Logging
import Synchronization

extension Pool {
    /// Registers another directory (typically on another disk) that can hold slot files. The directory
    /// is created if missing and must be writable.
    public func addStore(name: String, path: String) throws {
        try NameRules.validate(name, what: "store")
        guard path.hasPrefix("/") else {
            throw EngineError(.invalidArgument, "a store path must be absolute, not '\(NameRules.printable(path))'")
        }
        guard !path.contains("\0"), path.utf8.count < 4096 else {
            throw EngineError(.invalidArgument, "that store path is not usable")
        }
        try media.prepareStore(at: path)
        try monitor.withLock {
            try checkWritable()
            guard state.stores[name] == nil else { throw EngineError(.alreadyExists, "store '\(name)' already exists") }
            guard !state.stores.values.contains(where: { $0.path == path }) else {
                throw EngineError(.alreadyExists, "\(path) is already a store")
            }
            let record = StoreRecord(name: name, path: path)
            state.stores[name] = record
            state.dirty.stores.append(record)
        }
        try flush()
        logger.info("store added", metadata: ["store": "\(name)", "path": "\(path)"])
    }

    public func listStores() -> [StoreRecord] {
        monitor.withLock { state.stores.values.sorted { $0.name < $1.name } }
    }

    /// Sends the data a volume preserves for its snapshots to `store` (nil: keep it in the pool). Takes
    /// effect for chunks first overwritten from now on.
    public func setPreserveStore(volume name: String, store: String?) throws {
        try monitor.withLock {
            try checkWritable()
            let volume = try state.volume(named: name)
            if let store, state.stores[store] == nil {
                throw EngineError(.notFound, "store '\(store)' does not exist; add it with `cairn pool store add`")
            }
            volume.record.preserveStore = store
            state.dirty.volumes.insert(volume.id)
            if store != nil { preserveStoresInUse.store(true, ordering: .relaxed) }
        }
        try flush()
    }
}

extension EngineError.Code {
    /// The filesystem refused access.
    public static let permissionDenied = EngineError.Code(rawValue: "permission_denied")
}
