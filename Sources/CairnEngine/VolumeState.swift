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
    /// NBD sessions (or other users) attached to the volume.
    var attachments = 0

    init(record: VolumeRecord, geometry: ChunkGeometry, slotFile: UInt16) {
        self.record = record
        self.geometry = geometry
        self.slotFile = slotFile
    }

    var id: UInt64 { record.id }
    var epoch: UInt32 { record.epoch }

    /// Epoch of the newest snapshot, if any: a version born at or before it is visible to a snapshot.
    var newestSnapshotEpoch: UInt32? { snapshots.last?.epoch }

    /// True when some snapshot of this volume reads `version` (a version `index` of `list`).
    func isVisibleToSnapshot(_ list: VersionList, index: Int) -> Bool {
        let versions = list.versions
        let birth = versions[index].birth
        let nextBirth = index + 1 < versions.count ? versions[index + 1].birth : UInt32.max
        // Snapshots are few and sorted; the first snapshot at or after `birth` decides.
        for snapshot in snapshots where snapshot.epoch >= birth {
            return snapshot.epoch < nextBirth
        }
        return false
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
