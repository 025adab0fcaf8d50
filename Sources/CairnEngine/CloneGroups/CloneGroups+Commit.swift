import CairnIO
import Logging

/// Recovery at open and the clone groups' part of the group commit.
extension CloneGroups {
    /// Write-intent extents a mirrored clone keeps set in the persistent delta map while idle. Like DRBD's
    /// activity log (al-extents, 1237 by default): a hot extent costs one synchronous commit when it
    /// becomes active, not one per write; the least recently used idle ones expire at commit time.
    static let activityLogExtents = 256

    /// Builds the clone groups from the catalog: the clone-group design's recovery process. Every clone's delta
    /// map is filled from the group's persistent delta map (so it may gain bits another clone set; fig. 9),
    /// and a protected restore gets its protected restore map back from disk.
    static func load(_ catalog: PoolCatalog, volumes: [UInt64: VolumeState], into table: inout CloneGroupTable)
        throws
    {
        for record in catalog.cloneGroups {
            guard let source = volumes[record.sourceID] else {
                throw EngineError(.corrupt, "clone group of unknown volume \(record.sourceID)")
            }
            let states = Dictionary(record.clones.map { ($0.volumeID, $0.state) }) { first, _ in first }
            let machine = CloneGroupMachine(sourceID: record.sourceID, extentSize: record.extentSize, clones: states)
            let group = CloneGroupState(machine: machine, volumeSize: source.record.size)
            for block in catalog.cloneMapBlocks where block.sourceID == record.sourceID {
                guard let words = ExtentMap.decode(block.bits ?? []),
                    Int(block.block) < group.persistentDelta.durable.blockCount
                else {
                    throw EngineError(.corrupt, "clone group of '\(source.record.name)': malformed map block \(block.block)")
                }
                switch block.kind {
                case .persistentDelta: group.persistentDelta.durable.setBlockWords(Int(block.block), words)
                case .protectedRestore: group.persistentRestoreMap.durable.setBlockWords(Int(block.block), words)
                }
            }
            for clone in record.clones {
                guard volumes[clone.volumeID] != nil else {
                    throw EngineError(.corrupt, "clone group of '\(source.record.name)' lists unknown volume \(clone.volumeID)")
                }
                let member = CloneMember(
                    id: clone.volumeID, createdAt: clone.createdAt, extentCount: group.extentCount,
                    delta: group.persistentDelta.durable)
                group.members[clone.volumeID] = member
                table.sourceOfClone[clone.volumeID] = record.sourceID
                guard case .accepted(let actions) = group.machine.handle(
                    .recovered(clone: clone.volumeID, deltaEmpty: member.delta.isEmpty))
                else { continue }
                for action in actions { _ = group.perform(action) }
            }
            table.groups[record.sourceID] = group
        }
    }

    /// Adds the clone groups' changes to the commit being captured (monitor held): group records, and the
    /// persistent delta map and protected restore map blocks that changed, computed from memory now.
    /// Returns the indices of the restore map blocks captured while their restore runs.
    func capture(into t: inout MetadataTransaction) -> [Int] {
        var restoreBlocks: [Int] = []
        t.deleteCloneGroups = table.deleted.sorted()
        table.deleted = []
        for group in table.groups.values {
            expireActivity(group)
            if group.recordDirty {
                t.upsertCloneGroups.append(group.record)
                group.recordDirty = false
            }
            for block in group.persistentDelta.dirtyBlocks.sorted() {
                let words = group.unionWords(ofBlock: block)
                group.persistentDelta.inCommit[block] = words
                t.cloneMapBlocks.append(
                    CloneMapBlock(
                        sourceID: group.sourceID, kind: .persistentDelta, block: UInt32(block),
                        bits: ExtentMap.encode(words)))
            }
            group.persistentDelta.dirtyBlocks = []
            for block in group.persistentRestoreMap.dirtyBlocks.sorted() {
                let words =
                    group.restoreMap?.blockWords(block)
                    ?? [UInt64](repeating: 0, count: group.persistentRestoreMap.durable.wordRange(ofBlock: block).count)
                group.persistentRestoreMap.inCommit[block] = words
                if group.restoreMap != nil { restoreBlocks.append(t.cloneMapBlocks.count) }
                t.cloneMapBlocks.append(
                    CloneMapBlock(
                        sourceID: group.sourceID, kind: .protectedRestore, block: UInt32(block),
                        bits: ExtentMap.encode(words)))
            }
            group.persistentRestoreMap.dirtyBlocks = []
        }
        return restoreBlocks
    }

    /// The commit that captured the clone groups is durable (monitor held).
    func committed() {
        for group in table.groups.values {
            group.persistentDelta.committed()
            group.persistentRestoreMap.committed()
        }
    }

    /// Drops the least recently used idle write-intent extents beyond the activity log's size. Safe at
    /// capture time: no write is in flight there, and the commit syncs the data of every completed write
    /// on both sides before it records the clear.
    private func expireActivity(_ group: CloneGroupState) {
        for member in group.members.values where member.activityUse.count > Self.activityLogExtents {
            let idle = member.activityUse.filter { group.writers[$0.key] == nil }.sorted { $0.value < $1.value }
            for (extent, _) in idle.prefix(member.activityUse.count - Self.activityLogExtents) {
                member.activityUse[extent] = nil
                member.activity.remove(extent)
                group.persistentDelta.markDirty(extent)
            }
        }
    }

    /// Makes the protected-restore bits host writes wait for (`restoreIntent`) durable with a transaction
    /// that writes only those map blocks, without syncing any data: each bit is for an extent whose
    /// restore is already durable, so no data depends on it (see `sourceStep`). Every bit waiting when the
    /// transaction is built goes in, so concurrent writers share one commit. The stored words are the
    /// durable ones plus these bits, never memory's (which may hold bits whose copies are not durable
    /// yet). `mapCommitSerial` orders it with full commits' transactions (not their data syncs, which it
    /// need not wait for); a full commit adds these bits to its own words (`keepRestoreIntent`).
    func commitRestoreIntent(sourceID: UInt64) throws {
        try pool.mapCommitSerial.withLock {
            let blocks = try monitor.withLock { () throws -> [(block: Int, words: [UInt64])] in
                try pool.checkWritable()
                guard let group = table.groups[sourceID], group.restoreMap != nil else { return [] }
                var byBlock: [Int: [UInt64]] = [:]
                for extent in group.restoreIntent where !group.persistentRestoreMap.isDurablySet(extent) {
                    let block = ExtentMap.block(of: extent)
                    var words = byBlock[block] ?? group.persistentRestoreMap.durable.blockWords(block)
                    let local = extent - UInt64(block) * ExtentMap.extentsPerBlock
                    words[Int(local / 64)] |= 1 << (local % 64)
                    byBlock[block] = words
                }
                group.restoreIntent = []
                return byBlock.sorted { $0.key < $1.key }.map { (block: $0.key, words: $0.value) }
            }
            guard !blocks.isEmpty else { return }
            var transaction = MetadataTransaction()
            transaction.cloneMapBlocks = blocks.map {
                CloneMapBlock(
                    sourceID: sourceID, kind: .protectedRestore, block: UInt32($0.block), bits: ExtentMap.encode($0.words))
            }
            do {
                try pool.metadata.commit(transaction)
            } catch {
                throw pool.failStop(file: pool.media.location, call: "restore map commit", error: error)
            }
            monitor.withLock {
                guard let group = table.groups[sourceID] else { return }
                for (block, words) in blocks {
                    group.persistentRestoreMap.durable.setBlockWords(block, words)
                    // A full commit in flight writes these bits too (`keepRestoreIntent`): say so, or
                    // `isDurablySet` would read its older words as clearing them.
                    if var pending = group.persistentRestoreMap.inCommit[block] {
                        for i in pending.indices { pending[i] |= words[i] }
                        group.persistentRestoreMap.inCommit[block] = pending
                    }
                }
            }
        }
        monitor.broadcast()
    }
}
