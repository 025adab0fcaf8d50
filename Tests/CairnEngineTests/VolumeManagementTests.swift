import CairnEngine
import CairnTestSupport
import Foundation
import Testing

@Suite struct VolumeManagementTests {
    @Test func createListShowRenameDeletePersistAcrossReopen() throws {
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        do {
            let pool = try Pool.open(directory: dir, options: testOptions())
            defer { pool.close() }
            let a = try pool.volumes.create(name: "alpha", size: 1 << 30)
            #expect(a.chunkSize == 65536 && a.allocatedBytes == 0)
            try pool.volumes.create(name: "beta", size: 8 << 20, chunkSize: 1 << 20)
            try writeBytes(pool, a.id, 4096, pattern(1, 8192))
            try pool.volumes.rename(from: "beta", to: "gamma")
            #expect(pool.volumes.list().map(\.name) == ["alpha", "gamma"])
            try pool.volumes.resize(name: "alpha", size: 2 << 30)
            try pool.flush()
        }
        let pool = try Pool.open(directory: dir, options: testOptions())
        defer { pool.close() }
        let a = try pool.volumes.info(named: "alpha")
        #expect(a.size == 2 << 30)
        #expect(a.allocatedBytes == 8192)
        #expect(try readBytes(pool, a.id, 4096, 8192) == pattern(1, 8192))
        #expect(try pool.volumes.info(named: "gamma").chunkSize == 1 << 20)
        try pool.volumes.delete(name: "gamma")
        #expect(pool.volumes.list().map(\.name) == ["alpha"])
        #expect(try pool.checker.check().isHealthy)
    }

    @Test func badInputIsRefusedAndChangesNothing() throws {
        let pool = try Pool(media: SimulatedMedia(), options: testOptions())
        defer { pool.close() }
        try pool.volumes.create(name: "v", size: 1 << 20)
        func code(_ body: () throws -> Void) -> EngineError.Code? {
            do { try body() } catch let error as EngineError { return error.code } catch { return nil }
            return nil
        }
        #expect(code { try pool.volumes.create(name: "v", size: 1 << 20) } == .alreadyExists)
        #expect(code { try pool.volumes.create(name: "../etc", size: 1 << 20) } == .invalidArgument)
        #expect(code { try pool.volumes.create(name: "a@b", size: 1 << 20) } == .invalidArgument)
        #expect(code { try pool.volumes.create(name: "bad\u{1}", size: 1 << 20) } == .invalidArgument)
        #expect(
            code { try pool.volumes.create(name: String(repeating: "x", count: 129), size: 1 << 20) }
                == .invalidArgument)
        #expect(code { try pool.volumes.create(name: "w", size: 0) } == .invalidArgument)
        #expect(code { try pool.volumes.create(name: "w", size: 1000) } == .invalidArgument)
        #expect(code { try pool.volumes.create(name: "w", size: 1 << 20, chunkSize: 3000) } == .invalidArgument)
        #expect(code { try pool.volumes.rename(from: "nope", to: "x") } == .notFound)
        #expect(code { try pool.volumes.delete(name: "nope") } == .notFound)
        #expect(pool.volumes.list().map(\.name) == ["v"])
    }

    @Test func shrinkRefusesToDropDataUnlessForced() throws {
        let pool = try Pool(media: SimulatedMedia(), options: testOptions())
        defer { pool.close() }
        let v = try pool.volumes.create(name: "v", size: 4 << 20)
        try writeBytes(pool, v.id, 3 << 20, pattern(3, 65536))
        // Shrinking above the data is fine.
        try pool.volumes.resize(name: "v", size: (3 << 20) + 65536)
        #expect(throws: EngineError.self) { try pool.volumes.resize(name: "v", size: 1 << 20) }
        #expect(try pool.volumes.info(named: "v").size == (3 << 20) + 65536)
        try pool.volumes.resize(name: "v", size: 1 << 20, force: true)
        // Growing again shows zeros where the discarded data was.
        try pool.volumes.resize(name: "v", size: 4 << 20)
        #expect(try readBytes(pool, v.id, 3 << 20, 65536) == [UInt8](repeating: 0, count: 65536))
        #expect(try pool.volumes.info(named: "v").allocatedBytes == 0)
        #expect(try pool.checker.check().isHealthy)
    }

    @Test func deleteGivesSpaceBackAndRefusesWhileAttached() throws {
        let pool = try Pool(media: SimulatedMedia(), options: testOptions())
        defer { pool.close() }
        let v = try pool.volumes.create(name: "v", size: 4 << 20)
        try writeBytes(pool, v.id, 0, pattern(1, 1 << 20))
        #expect(pool.status().usedBytes == 1 << 20)
        try pool.volumes.attach(volumeID: v.id)
        #expect(throws: EngineError.self) { try pool.volumes.delete(name: "v") }
        pool.volumes.detach(volumeID: v.id)
        try pool.volumes.delete(name: "v")
        let status = pool.status()
        #expect(status.usedBytes == 0)
        #expect(status.pendingFreeBytes == 0)
        #expect(try pool.checker.check().isHealthy)
    }

    @Test func secondOwnerIsRefused() throws {
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let pool = try Pool.open(directory: dir, options: testOptions())
        defer { pool.close() }
        do {
            _ = try Pool.open(directory: dir, options: testOptions())
            Issue.record("a second open of the same pool succeeded")
        } catch let error as EngineError {
            #expect(error.code == .poolLocked)
        }
    }
}
