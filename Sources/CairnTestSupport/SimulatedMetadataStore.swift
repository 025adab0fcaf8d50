import CairnEngine
import Synchronization

/// A metadata store in memory whose commits are atomic and durable by construction, like SQLite's.
/// Hooks let tests fail commits or capture a crash image at the instant a commit becomes durable.
public final class SimulatedMetadataStore: MetadataStore {
    struct Durable {
        var catalog = PoolCatalog(poolID: "simulated", formatVersion: 1, slotFiles: [], volumes: [], snapshots: [])
        var mappings: [MappingKey: [ChunkVersion]] = [:]
        var journalApplied: UInt64 = 0
    }

    struct MappingKey: Hashable, Comparable {
        var volume: UInt64
        var chunk: UInt64
        static func < (a: MappingKey, b: MappingKey) -> Bool { (a.volume, a.chunk) < (b.volume, b.chunk) }
    }

    let durable: Mutex<Durable>
    /// Called after each commit is applied (on the committing thread).
    let afterCommit: Mutex<(@Sendable () -> Void)?> = Mutex(nil)
    let failCommits = Mutex(false)

    init(_ state: Durable = Durable()) { durable = Mutex(state) }

    public func setAfterCommit(_ hook: (@Sendable () -> Void)?) { afterCommit.withLock { $0 = hook } }
    public func setFailCommits(_ fail: Bool) { failCommits.withLock { $0 = fail } }

    public func load(mappings visit: (MappingRow) throws -> Void) throws -> PoolCatalog {
        let state = durable.withLock { $0 }
        for key in state.mappings.keys.sorted() {
            for version in state.mappings[key]! {
                try visit(MappingRow(volumeID: key.volume, chunk: key.chunk, version: version))
            }
        }
        return state.catalog
    }

    public func journalApplied() throws -> UInt64 { durable.withLock { $0.journalApplied } }

    /// True while `setFailCommits(true)` is in force (the journal's simulated file obeys it too).
    var commitsFail: Bool { failCommits.withLock { $0 } }

    /// Runs the after-commit hook: the journal's simulated file calls it when an append is durable.
    func committed() { afterCommit.withLock { $0 }?() }

    public func commit(_ t: MetadataTransaction) throws {
        if failCommits.withLock({ $0 }) {
            throw EngineError(.ioFailure, "simulated metadata commit failure")
        }
        durable.withLock { d in
            for store in t.upsertStores {
                d.catalog.stores.removeAll { $0.name == store.name }
                d.catalog.stores.append(store)
            }
            for file in t.upsertSlotFiles {
                d.catalog.slotFiles.removeAll { $0.id == file.id }
                d.catalog.slotFiles.append(file)
            }
            for id in t.deleteVolumes {
                d.catalog.volumes.removeAll { $0.id == id }
                d.catalog.snapshots.removeAll { $0.volumeID == id }
                d.mappings = d.mappings.filter { $0.key.volume != id }
            }
            for volume in t.upsertVolumes {
                d.catalog.volumes.removeAll { $0.id == volume.id }
                d.catalog.volumes.append(volume)
            }
            for s in t.deleteSnapshots {
                d.catalog.snapshots.removeAll { $0.volumeID == s.volumeID && $0.name == s.name }
            }
            for s in t.upsertSnapshots {
                d.catalog.snapshots.removeAll { $0.volumeID == s.volumeID && $0.name == s.name }
                d.catalog.snapshots.append(s)
            }
            if let applied = t.journalApplied { d.journalApplied = applied }
            for entry in t.chunks {
                let key = MappingKey(volume: entry.volumeID, chunk: entry.chunk)
                d.mappings[key] = entry.versions.isEmpty ? nil : entry.versions
            }
            for source in t.deleteCloneGroups {
                d.catalog.cloneGroups.removeAll { $0.sourceID == source }
                d.catalog.cloneMapBlocks.removeAll { $0.sourceID == source }
            }
            for group in t.upsertCloneGroups {
                d.catalog.cloneGroups.removeAll { $0.sourceID == group.sourceID }
                d.catalog.cloneGroups.append(group)
            }
            for block in t.cloneMapBlocks {
                d.catalog.cloneMapBlocks.removeAll {
                    $0.sourceID == block.sourceID && $0.kind == block.kind && $0.block == block.block
                }
                if block.bits != nil { d.catalog.cloneMapBlocks.append(block) }
            }
            d.catalog.volumes.sort { $0.id < $1.id }
            d.catalog.snapshots.sort { ($0.volumeID, $0.epoch) < ($1.volumeID, $1.epoch) }
        }
        afterCommit.withLock { $0 }?()
    }

    public func integrityCheck() throws -> [String] { [] }
    public func close() {}
}
