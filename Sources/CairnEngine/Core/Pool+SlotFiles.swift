import CairnIO

extension Pool {
    /// The slot file for `chunkSize` in the pool (or in `store`), created (and queued for commit) on first
    /// use.
    func slotFile(forChunkSize chunkSize: UInt32, store: String? = nil) throws -> UInt16 {
        if let existing = state.slotFileRecords.values.first(where: { $0.chunkSize == chunkSize && $0.store == store }) {
            return existing.id
        }
        let id = (state.slotFileRecords.keys.max() ?? 0) + 1
        let record = SlotFileRecord(id: id, name: "slots-\(chunkSize).dat", chunkSize: chunkSize, store: store)
        let storePath = store.flatMap { state.stores[$0]?.path }
        files[id] = MeteredStorageFile(
            try checksummed(media.openSlotFile(named: record.name, in: storePath), slotFile: record.name, in: storePath),
            counters: counters)
        state.slotFileRecords[id] = record
        state.allocators[id] = SlotAllocator(fileID: id, chunkSize: chunkSize)
        state.dirty.slotFiles.append(record)
        return id
    }
}
