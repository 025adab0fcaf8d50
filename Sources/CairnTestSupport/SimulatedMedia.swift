import CairnEngine
import CairnIO
import Synchronization

/// Pool media in memory that can be "power-cut": `crashImage` returns new media holding only what a
/// real disk would still have — synced data, a random subset of unsynced writes (some torn), and the
/// metadata of completed commits.
public final class SimulatedMedia: PoolMedia {
    public let location: String
    public let store: SimulatedMetadataStore
    let files: Mutex<[String: SimulatedStorageFile]>
    let available: Mutex<UInt64?>

    public init(location: String = "simulated") {
        self.location = location
        self.store = SimulatedMetadataStore()
        self.files = Mutex([:])
        self.available = Mutex(nil)
    }

    init(location: String, store: SimulatedMetadataStore, files: [String: SimulatedStorageFile]) {
        self.location = location
        self.store = store
        self.files = Mutex(files)
        self.available = Mutex(nil)
    }

    public func openMetadataStore() throws -> any MetadataStore { store }

    /// The journal is a simulated file like the slot files (so a power cut can lose or tear its unsynced
    /// appends), whose syncs are the store's commits: `setFailCommits` fails them and the after-commit
    /// hook runs when one is durable.
    public func openMetadataJournal() throws -> any StorageFile {
        let file = try openSlotFile(named: Self.journalName, in: nil) as! SimulatedStorageFile
        file.syncHooks.withLock {
            $0 = (
                before: { [store] in
                    if store.commitsFail { throw EngineError(.ioFailure, "simulated metadata commit failure") }
                },
                after: { [store] in store.committed() }
            )
        }
        return file
    }

    /// Name of the metadata journal among the files.
    public static let journalName = "metadata.journal"

    public func openSlotFile(named name: String, in store: String?) throws -> any StorageFile {
        let key = store.map { "\($0)/\(name)" } ?? name
        return files.withLock { files in
            if let file = files[key] { return file }
            let file = SimulatedStorageFile(path: "\(location)/\(key)")
            files[key] = file
            return file
        }
    }

    /// A slot file by name (`store/name` for one in a store).
    public func slotFile(named name: String) -> SimulatedStorageFile? { files.withLock { $0[name] } }

    public func probeCopyMethod() -> CopyMethod { .userspace }

    public func prepareStore(at path: String) throws {}

    public func availableBytes() -> UInt64? { available.withLock { $0 } }

    /// Pretends the filesystem has only `bytes` free (nil: unlimited).
    public func setAvailableBytes(_ bytes: UInt64?) { available.withLock { $0 = bytes } }

    /// What survives a power cut right now.
    public func crashImage(using random: inout some RandomNumberGenerator) -> SimulatedMedia {
        // In name order: the generator's draws must not follow the dictionary's per-process hash order, or a
        // printed seed would not replay the same crash.
        let images = files.withLock { files in
            var images: [String: SimulatedStorageFile] = [:]
            for (name, file) in files.sorted(by: { $0.key < $1.key }) {
                images[name] = SimulatedStorageFile(path: file.path, durable: file.crashImage(using: &random))
            }
            return images
        }
        let metadata = SimulatedMetadataStore(store.durable.withLock { $0 })
        return SimulatedMedia(location: location, store: metadata, files: images)
    }
}
