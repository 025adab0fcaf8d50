/// In-memory state of one volume: its durable record, snapshots, chunk map, and the bookkeeping that
/// coordinates I/O on it. Guarded by the pool mutex.
///
/// A class, not a struct: the map can hold millions of entries, and a value type would be copied
/// whole (copy-on-write) whenever code held a copy of the volume while changing one chunk.
final class VolumeState {
    var record: VolumeRecord
    let geometry: ChunkGeometry
    /// The slot file all of this volume's versions live in (one per chunk size).
    let slotFile: UInt16
    /// Snapshots, ascending by epoch.
    var snapshots: [SnapshotRecord] = []
    /// chunk index → versions, oldest first.
    var map: [UInt64: VersionList] = [:]
    /// Ordered view of `map`'s keys.
    var present = ChunkPresenceIndex()
    var locks = ChunkLockTable()
    /// Requests between planning and installing; a snapshot waits for this to reach zero so that no
    /// write straddles the epoch change.
    var writesInFlight = 0
    /// Set while a snapshot is being taken: new writes wait.
    var epochChangePending = false
    /// Set while a rollback rewrites the map: new reads wait too.
    var readsBlocked = false
    /// Snapshots whose deletion is being committed: hidden from users, still protecting their versions.
    var deletingSnapshots: Set<String> = []
    /// NBD sessions (or other readers) attached to each snapshot, by name.
    var snapshotAttachments: [String: Int] = [:]
    /// NBD sessions (or other users) attached to the volume.
    var attachments = 0
    /// A forced delete is waiting for I/O in flight; new I/O fails as if the volume were gone.
    var deleting = false

    init(record: VolumeRecord, geometry: ChunkGeometry, slotFile: UInt16) {
        self.record = record
        self.geometry = geometry
        self.slotFile = slotFile
    }

    var id: UInt64 { record.id }
    var epoch: UInt32 { record.epoch }

    /// Epoch of the newest snapshot, if any: a version born at or before it is visible to a snapshot.
    var newestSnapshotEpoch: UInt32? { snapshots.last?.epoch }

    /// The snapshot taken at `epoch` (hidden ones included: they still read their versions).
    func snapshot(atEpoch epoch: UInt32) throws -> SnapshotRecord {
        guard let snapshot = snapshots.first(where: { $0.epoch == epoch }) else {
            throw EngineError(.notFound, "the snapshot was deleted")
        }
        return snapshot
    }

    /// A visible snapshot by name.
    func snapshot(named name: String) throws -> SnapshotRecord {
        guard let snapshot = snapshots.first(where: { $0.name == name }), !deletingSnapshots.contains(name) else {
            throw EngineError(.notFound, "snapshot '\(record.name)@\(name)' does not exist")
        }
        return snapshot
    }

    func setVersions(_ chunk: UInt64, _ list: VersionList?) {
        if let list {
            map[chunk] = list
            present.insert(chunk)
        } else {
            map[chunk] = nil
            present.remove(chunk)
        }
    }
}
