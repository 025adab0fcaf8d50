import CairnEngine

/// The pool's SQLite store on the ceph VFS, whose commits count only while this node owns the pool.
///
/// libcephsqlite 16.2 cannot tell a fenced node that its writes failed: its striper waits for each
/// write's completion but takes the wait's own result (always 0) for the write's, so SQLite's sync
/// succeeds over writes the OSDs refused, and the VFS notices the fencing only when its own lock renewal
/// fails, up to `cephsqlite_lock_renewal_interval` (2 s) later. A commit is therefore confirmed after
/// the VFS returns (`PoolOwnership.confirm`): if this node was fenced or lost its lease, the commit
/// throws, and the pool fail-stops as after any failed commit.
final class OwnedMetadataStore: MetadataStore, @unchecked Sendable {
    // @unchecked: both members are Sendable classes used only through their own thread-safe methods.
    private let base: any MetadataStore
    private let ownership: PoolOwnership

    init(base: any MetadataStore, ownership: PoolOwnership) {
        self.base = base
        self.ownership = ownership
    }

    func load(mappings: (MappingRow) throws -> Void) throws -> PoolCatalog { try base.load(mappings: mappings) }

    func commit(_ transaction: MetadataTransaction) throws {
        // A node that already knows it lost the pool writes nothing more.
        try ownership.requireHeld()
        try base.commit(transaction)
        try ownership.confirm()
    }

    func journalApplied() throws -> UInt64 { try base.journalApplied() }

    func integrityCheck() throws -> [String] { try base.integrityCheck() }

    func close() { base.close() }
}
