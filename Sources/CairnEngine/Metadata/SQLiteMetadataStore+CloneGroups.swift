import Foundation
import GRDB

extension SQLiteMetadataStore {
    /// Reads every clone group and its stored map blocks (migration `v4-clone-groups`).
    static func loadCloneGroups(_ db: Database, into catalog: inout PoolCatalog) throws {
        let decoder = JSONDecoder()
        for row in try Row.fetchAll(db, sql: "SELECT source_id, record FROM clone_groups ORDER BY source_id") {
            let text: String = row["record"]
            guard let record = try? decoder.decode(CloneGroupRecord.self, from: Data(text.utf8)) else {
                throw EngineError(.corrupt, "clone group of volume \(row["source_id"] as Int64): malformed record")
            }
            catalog.cloneGroups.append(record)
        }
        let cursor = try Row.fetchCursor(db, sql: "SELECT source_id, kind, block, bits FROM clone_maps")
        while let row = try cursor.next() {
            let source = UInt64(bitPattern: row[0] as Int64)
            guard let kind = CloneMapKind(rawValue: UInt8(clamping: row[1] as Int64)) else {
                throw EngineError(.corrupt, "clone group of volume \(source): unknown map kind")
            }
            let bits: Data = row[3]
            catalog.cloneMapBlocks.append(
                CloneMapBlock(sourceID: source, kind: kind, block: UInt32(clamping: row[2] as Int64), bits: [UInt8](bits)))
        }
    }

    /// Writes a transaction's clone-group changes: deletions first, so a group removed and created again
    /// in one commit keeps only its new rows.
    static func applyCloneGroups(_ t: MetadataTransaction, to db: Database) throws {
        for source in t.deleteCloneGroups {
            let key = Int64(bitPattern: source)
            try db.cachedStatement(sql: "DELETE FROM clone_groups WHERE source_id = ?").execute(arguments: [key])
            try db.cachedStatement(sql: "DELETE FROM clone_maps WHERE source_id = ?").execute(arguments: [key])
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        for group in t.upsertCloneGroups {
            let text = String(decoding: try encoder.encode(group), as: UTF8.self)
            try db.cachedStatement(sql: "INSERT OR REPLACE INTO clone_groups (source_id, record) VALUES (?, ?)")
                .execute(arguments: [Int64(bitPattern: group.sourceID), text])
        }
        for block in t.cloneMapBlocks {
            let source = Int64(bitPattern: block.sourceID)
            let kind = Int64(block.kind.rawValue)
            let index = Int64(block.block)
            if let bits = block.bits {
                try db.cachedStatement(
                    sql: "INSERT OR REPLACE INTO clone_maps (source_id, kind, block, bits) VALUES (?, ?, ?, ?)"
                ).execute(arguments: [source, kind, index, Data(bits)])
            } else {
                try db.cachedStatement(sql: "DELETE FROM clone_maps WHERE source_id = ? AND kind = ? AND block = ?")
                    .execute(arguments: [source, kind, index])
            }
        }
    }
}
