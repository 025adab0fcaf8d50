import CairnArchive
@testable import CairnBackup
import CairnEngine
import Foundation
import Testing

/// `--since` any earlier backup of the volume that is still a base, not only the latest: differential
/// increments against an old full, increments of increments, and a clear refusal once a base has aged
/// out of `BackupCoordinator.retainedBases`. Every chain restores to the volume as it was at its T.
@Suite(.serialized) struct IncrementalBaseTests {
    @Test func anyRetainedBackupCanBeTheBase() throws {
        let fixture = try BackupTestPool()
        defer { fixture.close() }
        let (directory, pool, coordinator) = (fixture.directory, fixture.pool, fixture.coordinator)
        let size: UInt64 = 4 << 20
        let volume = try pool.volumes.create(name: "v", size: size)
        func path(_ name: String) -> String { directory + "/" + name + ".cbk" }
        func backup(_ name: String, since: String? = nil) throws -> BackupRecord {
            let started = try startSplit(
                coordinator, BackupRequest(volume: "v", archivePath: path(name), sinceArchive: since.map(path)))
            let record = try waitForBackup(coordinator, started.record.id)
            #expect(record.phase == .succeeded, "\(name): \(record.message ?? "")")
            return record
        }
        func restored(_ chain: [String], as name: String) throws -> [UInt8] {
            _ = try BackupRestorer(pool: pool).restore(paths: chain.map(path), to: name, force: false)
            return try readBytes(pool, try pool.volumes.id(named: name), 0, Int(size))
        }

        try writeBytes(pool, volume.id, 0, [UInt8](repeating: 1, count: 1 << 20))
        _ = try backup("full")
        let atFull = try readBytes(pool, volume.id, 0, Int(size))
        try writeBytes(pool, volume.id, 1 << 20, [UInt8](repeating: 2, count: 8192))
        _ = try backup("inc1", since: "full")
        let atInc1 = try readBytes(pool, volume.id, 0, Int(size))
        try writeBytes(pool, volume.id, 2 << 20, [UInt8](repeating: 3, count: 8192))
        try pool.discard(volumeID: volume.id, offset: 0, length: 64 << 10, mode: .trim)
        // A differential: against the full although inc1 is newer. It carries both changes since the full.
        let diff = try backup("diff", since: "full")
        #expect((diff.dataBytes ?? 0) >= 16384 && (diff.dataBytes ?? .max) <= 64 << 10)
        let atDiff = try readBytes(pool, volume.id, 0, Int(size))
        try writeBytes(pool, volume.id, 3 << 20, [UInt8](repeating: 4, count: 4096))
        _ = try backup("inc2", since: "inc1")
        let atInc2 = try readBytes(pool, volume.id, 0, Int(size))

        #expect(try restored(["full"], as: "r0") == atFull)
        #expect(try restored(["full", "inc1"], as: "r1") == atInc1)
        #expect(try restored(["full", "diff"], as: "r2") == atDiff)
        #expect(try restored(["full", "inc1", "inc2"], as: "r3") == atInc2)
        // A chain with a link missing, or two increments of the same base, is refused before any volume
        // is created.
        for chain in [["full", "inc2"], ["full", "diff", "inc2"], ["full", "inc1", "diff"]] {
            #expect(throws: EngineError.self, "\(chain)") {
                try BackupRestorer(pool: pool).restore(paths: chain.map(path), to: "bad", force: false)
            }
            #expect((try? pool.volumes.info(named: "bad")) == nil)
        }

        // Four backups later the full is no longer a base: refused clearly, and nothing is started.
        for index in 0..<BackupCoordinator.retainedBases {
            try writeBytes(pool, volume.id, UInt64(index) * 4096, [UInt8](repeating: 9, count: 4096))
            _ = try backup("later\(index)", since: index == 0 ? "inc2" : "later\(index - 1)")
        }
        let before = coordinator.list().count
        do {
            _ = try coordinator.start(BackupRequest(volume: "v", archivePath: path("stale"), sinceArchive: path("full")))
            Issue.record("an increment of a base that aged out was started")
        } catch let error as EngineError {
            #expect(error.code == .notFound)
            #expect(error.message.contains("is gone"))
        }
        #expect(coordinator.list().count == before)
        #expect(!FileManager.default.fileExists(atPath: path("stale")))
        let bases = try pool.snapshots.list(volume: "v").filter { $0.name.hasPrefix(BackupCoordinator.namePrefix) }
        #expect(bases.count == BackupCoordinator.retainedBases)
        // The oldest base still kept works.
        _ = try backup("fromOldest", since: "later0")
    }
}
