import Foundation
import GRDB

/// Durable metadata in SQLite (through GRDB): WAL journal, synchronous=FULL, one transaction per group
/// commit. SQLite is only touched at open, at commit and by management operations, never by an
/// ordinary read or write.
public final class SQLiteMetadataStore: MetadataStore {
    /// Version of the on-disk format this code writes. Bumped on any incompatible schema change;
    /// opening a pool with another version fails with `.corrupt` instead of guessing.
    public static let formatVersion = 1

    private let queue: DatabaseQueue
    public let path: String

    /// Opens (creating when absent) the metadata database at `path`.
    public init(path: String) throws {
        var configuration = Configuration()
        configuration.label = "cairn.metadata"
        configuration.prepareDatabase { db in
            // WAL: a commit is one append + fsync of the log; readers (pool check) never block it.
            try db.execute(sql: "PRAGMA journal_mode = WAL")
            // FULL: the WAL is fsynced at every commit, so a committed transaction survives power loss.
            try db.execute(sql: "PRAGMA synchronous = FULL")
        }
        do {
            queue = try DatabaseQueue(path: path, configuration: configuration)
        } catch {
            throw EngineError(.ioFailure, "cannot open the metadata database \(path)", cause: error)
        }
        self.path = path
        try migrate()
    }

    private func migrate() throws {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1") { db in
            try db.execute(
                sql: """
                    CREATE TABLE pool (key TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL);
                    CREATE TABLE slot_files (
                        id INTEGER PRIMARY KEY NOT NULL,
                        name TEXT NOT NULL UNIQUE,
                        chunk_size INTEGER NOT NULL);
                    CREATE TABLE volumes (
                        id INTEGER PRIMARY KEY NOT NULL,
                        name TEXT NOT NULL UNIQUE,
                        size INTEGER NOT NULL,
                        chunk_size INTEGER NOT NULL,
                        epoch INTEGER NOT NULL,
                        parent_id INTEGER,
                        parent_epoch INTEGER,
                        created_at INTEGER NOT NULL);
                    CREATE TABLE snapshots (
                        volume_id INTEGER NOT NULL,
                        name TEXT NOT NULL,
                        epoch INTEGER NOT NULL,
                        size INTEGER NOT NULL,
                        created_at INTEGER NOT NULL,
                        PRIMARY KEY (volume_id, name));
                    CREATE TABLE mappings (
                        volume_id INTEGER NOT NULL,
                        chunk INTEGER NOT NULL,
                        birth INTEGER NOT NULL,
                        slot INTEGER NOT NULL,
                        data_mask INTEGER NOT NULL,
                        defined_mask INTEGER NOT NULL,
                        PRIMARY KEY (volume_id, chunk, birth)) WITHOUT ROWID;
                    """)
            try db.execute(
                sql: "INSERT INTO pool (key, value) VALUES ('pool_id', ?), ('format_version', ?)",
                arguments: [UUID().uuidString.lowercased(), String(Self.formatVersion)])
        }
        migrator.registerMigration("v2-stores") { db in
            // Stores: other directories (disks) slot files can live in; a volume may send the data it
            // preserves for snapshots to one of them.
            try db.execute(
                sql: """
                    CREATE TABLE stores (name TEXT PRIMARY KEY NOT NULL, path TEXT NOT NULL);
                    ALTER TABLE slot_files ADD COLUMN store TEXT;
                    ALTER TABLE volumes ADD COLUMN preserve_store TEXT;
                    """)
        }
        migrator.registerMigration("v3-chunk-blobs") { db in
            // One row per chunk with its version list as a BLOB (see VersionCodec).
            try db.execute(
                sql: """
                    CREATE TABLE chunks (
                        volume_id INTEGER NOT NULL,
                        chunk INTEGER NOT NULL,
                        versions BLOB NOT NULL,
                        PRIMARY KEY (volume_id, chunk)) WITHOUT ROWID;
                    """)
            let rows = try Row.fetchCursor(
                db,
                sql: "SELECT volume_id, chunk, birth, slot, data_mask, defined_mask FROM mappings ORDER BY volume_id, chunk, birth"
            )
            var current: (volume: Int64, chunk: Int64)?
            var versions: [ChunkVersion] = []
            func flushChunk() throws {
                guard let key = current, !versions.isEmpty else { return }
                try db.execute(
                    sql: "INSERT INTO chunks (volume_id, chunk, versions) VALUES (?, ?, ?)",
                    arguments: [key.volume, key.chunk, Data(VersionCodec.encode(versions))])
                versions = []
            }
            while let row = try rows.next() {
                let key = (row[0] as Int64, row[1] as Int64)
                if current.map({ $0 != key }) ?? true {
                    try flushChunk()
                    current = key
                }
                versions.append(
                    ChunkVersion(
                        birth: UInt32(row[2] as Int64), slot: SlotAddress(rawValue: UInt64(bitPattern: row[3] as Int64)),
                        dataMask: UInt64(bitPattern: row[4] as Int64), definedMask: UInt64(bitPattern: row[5] as Int64)))
            }
            try flushChunk()
            try db.execute(sql: "DROP TABLE mappings")
        }
        migrator.registerMigration("v4-clone-groups") { db in
            // Clone groups: one row per group (its record as JSON: extent size, clones and
            // their states), and the group's maps in 4 KiB blocks (see ExtentMap); a missing block is zero.
            try db.execute(
                sql: """
                    CREATE TABLE clone_groups (source_id INTEGER PRIMARY KEY NOT NULL, record TEXT NOT NULL);
                    CREATE TABLE clone_maps (
                        source_id INTEGER NOT NULL,
                        kind INTEGER NOT NULL,
                        block INTEGER NOT NULL,
                        bits BLOB NOT NULL,
                        PRIMARY KEY (source_id, kind, block)) WITHOUT ROWID;
                    """)
        }
        do {
            try migrator.migrate(queue)
        } catch {
            throw EngineError(.corrupt, "cannot prepare the metadata database \(path)", cause: error)
        }
    }

    public func load(mappings visit: (MappingRow) throws -> Void) throws -> PoolCatalog {
        do {
            return try queue.read { db in
                let settings = try Dictionary(
                    uniqueKeysWithValues: Row.fetchAll(db, sql: "SELECT key, value FROM pool").map {
                        ($0["key"] as String, $0["value"] as String)
                    })
                let version = Int(settings["format_version"] ?? "") ?? -1
                guard version == Self.formatVersion else {
                    throw EngineError(
                        .corrupt,
                        "the pool's metadata is format \(version); this cairn reads format \(Self.formatVersion)")
                }
                let slotFiles = try Row.fetchAll(db, sql: "SELECT id, name, chunk_size, store FROM slot_files").map {
                    SlotFileRecord(
                        id: UInt16($0["id"] as Int64), name: $0["name"], chunkSize: UInt32($0["chunk_size"] as Int64),
                        store: $0["store"])
                }
                let stores = try Row.fetchAll(db, sql: "SELECT name, path FROM stores ORDER BY name").map {
                    StoreRecord(name: $0["name"], path: $0["path"])
                }
                let volumes = try Row.fetchAll(db, sql: "SELECT * FROM volumes ORDER BY id").map(Self.volume)
                let snapshots = try Row.fetchAll(db, sql: "SELECT * FROM snapshots ORDER BY volume_id, epoch").map {
                    SnapshotRecord(
                        volumeID: UInt64($0["volume_id"] as Int64), name: $0["name"], epoch: UInt32($0["epoch"] as Int64),
                        size: UInt64($0["size"] as Int64), createdAt: $0["created_at"])
                }
                let cursor = try Row.fetchCursor(
                    db, sql: "SELECT volume_id, chunk, versions FROM chunks ORDER BY volume_id, chunk")
                while let row = try cursor.next() {
                    let volume = UInt64(bitPattern: row[0] as Int64)
                    let chunk = UInt64(bitPattern: row[1] as Int64)
                    let blob: Data = row[2]
                    guard let versions = VersionCodec.decode([UInt8](blob)), !versions.isEmpty else {
                        throw EngineError(.corrupt, "volume \(volume) chunk \(chunk): malformed version list")
                    }
                    for version in versions {
                        try visit(MappingRow(volumeID: volume, chunk: chunk, version: version))
                    }
                }
                var catalog = PoolCatalog(
                    poolID: settings["pool_id"] ?? "", formatVersion: version, slotFiles: slotFiles, volumes: volumes,
                    snapshots: snapshots)
                catalog.stores = stores
                try Self.loadCloneGroups(db, into: &catalog)
                return catalog
            }
        } catch let error as EngineError {
            throw error
        } catch {
            throw EngineError(.corrupt, "cannot read the metadata database \(path)", cause: error)
        }
    }

    private static func volume(_ row: Row) -> VolumeRecord {
        let parentID: Int64? = row["parent_id"]
        let parentEpoch: Int64? = row["parent_epoch"]
        return VolumeRecord(
            id: UInt64(row["id"] as Int64), name: row["name"], size: UInt64(row["size"] as Int64),
            chunkSize: UInt32(row["chunk_size"] as Int64), epoch: UInt32(row["epoch"] as Int64),
            parent: parentID.map { ParentLink(volumeID: UInt64($0), epoch: UInt32(parentEpoch ?? 0)) },
            createdAt: row["created_at"], preserveStore: row["preserve_store"])
    }

    public func journalApplied() throws -> UInt64 {
        do {
            return try queue.read { db in
                try String.fetchOne(db, sql: "SELECT value FROM pool WHERE key = 'journal_applied'")
                    .flatMap { UInt64($0) } ?? 0
            }
        } catch {
            throw EngineError(.corrupt, "cannot read the metadata database \(path)", cause: error)
        }
    }

    public func commit(_ transaction: MetadataTransaction) throws {
        guard !transaction.isEmpty || transaction.journalApplied != nil else { return }
        do {
            try queue.inTransaction(.immediate) { db in
                try Self.apply(transaction, to: db)
                return .commit
            }
        } catch {
            throw EngineError(.ioFailure, "metadata commit failed", cause: error)
        }
    }

    private static func apply(_ t: MetadataTransaction, to db: Database) throws {
        for store in t.upsertStores {
            try db.cachedStatement(sql: "INSERT OR REPLACE INTO stores (name, path) VALUES (?, ?)")
                .execute(arguments: [store.name, store.path])
        }
        for file in t.upsertSlotFiles {
            try db.cachedStatement(
                sql: "INSERT OR REPLACE INTO slot_files (id, name, chunk_size, store) VALUES (?, ?, ?, ?)"
            ).execute(arguments: [Int64(file.id), file.name, Int64(file.chunkSize), file.store])
        }
        for id in t.deleteVolumes {
            let key = Int64(bitPattern: id)
            try db.cachedStatement(sql: "DELETE FROM chunks WHERE volume_id = ?").execute(arguments: [key])
            try db.cachedStatement(sql: "DELETE FROM snapshots WHERE volume_id = ?").execute(arguments: [key])
            try db.cachedStatement(sql: "DELETE FROM volumes WHERE id = ?").execute(arguments: [key])
        }
        for v in t.upsertVolumes {
            try db.cachedStatement(
                sql: """
                    INSERT INTO volumes (
                        id, name, size, chunk_size, epoch, parent_id, parent_epoch, created_at, preserve_store)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                    ON CONFLICT (id) DO UPDATE SET name = excluded.name, size = excluded.size, epoch = excluded.epoch,
                        preserve_store = excluded.preserve_store
                    """
            ).execute(arguments: [
                Int64(bitPattern: v.id), v.name, Int64(v.size), Int64(v.chunkSize), Int64(v.epoch),
                v.parent.map { Int64(bitPattern: $0.volumeID) }, v.parent.map { Int64($0.epoch) }, v.createdAt,
                v.preserveStore,
            ])
        }
        for s in t.deleteSnapshots {
            try db.cachedStatement(sql: "DELETE FROM snapshots WHERE volume_id = ? AND name = ?")
                .execute(arguments: [Int64(bitPattern: s.volumeID), s.name])
        }
        for s in t.upsertSnapshots {
            try db.cachedStatement(
                sql: "INSERT OR REPLACE INTO snapshots (volume_id, name, epoch, size, created_at) VALUES (?, ?, ?, ?, ?)"
            ).execute(arguments: [Int64(bitPattern: s.volumeID), s.name, Int64(s.epoch), Int64(s.size), s.createdAt])
        }
        try applyCloneGroups(t, to: db)
        if let applied = t.journalApplied {
            try db.cachedStatement(sql: "INSERT OR REPLACE INTO pool (key, value) VALUES ('journal_applied', ?)")
                .execute(arguments: [String(applied)])
        }
        let delete = try db.cachedStatement(sql: "DELETE FROM chunks WHERE volume_id = ? AND chunk = ?")
        let upsert = try db.cachedStatement(
            sql: "INSERT OR REPLACE INTO chunks (volume_id, chunk, versions) VALUES (?, ?, ?)")
        for entry in t.chunks {
            let volume = Int64(bitPattern: entry.volumeID)
            let chunk = Int64(bitPattern: entry.chunk)
            if entry.versions.isEmpty {
                try delete.execute(arguments: [volume, chunk])
            } else {
                try upsert.execute(arguments: [volume, chunk, Data(VersionCodec.encode(entry.versions))])
            }
        }
    }

    public func integrityCheck() throws -> [String] {
        try queue.read { db in
            let lines = try String.fetchAll(db, sql: "PRAGMA integrity_check")
            return lines == ["ok"] ? [] : lines.map { "sqlite: \($0)" }
        }
    }

    public func close() {
        try? queue.close()
    }
}
