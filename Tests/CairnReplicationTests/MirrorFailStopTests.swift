import CairnEngine
import CairnIO
import CairnTestSupport
import Foundation
import Logging
import MirrorProtocol
import NIOCore
import NIOPosix
import Testing

@testable import CairnReplication

/// The primary's own files failing: a change map that cannot be synced fractures the mirror durably
/// with the map marked lost; a fracture that cannot be recorded stops the pool's writes.
@Suite("mirror durability failures")
struct MirrorFailStopTests {
    final class Fixture: @unchecked Sendable {
        let pool: Pool
        let executor = IOExecutor(threadCount: 1, queueCapacity: 16)
        let fileSystem = SimulatedFileSystem()
        let store: MirrorRecordStore
        let mapFile = SimulatedStorageFile(path: "/pool/mirrors/primary-1.map")
        let mirror: PrimaryMirror

        init(state: PrimaryMirrorRecord.State) throws {
            var options = PoolOptions()
            options.logger.logLevel = .critical
            pool = try Pool(media: SimulatedMedia(), options: options)
            let volume = try pool.volumes.create(name: "src", size: 8 << 20, chunkSize: 65536)
            try fileSystem.makeDirectory("/pool")
            store = try MirrorRecordStore(dataDirectory: "/pool", fileSystem: fileSystem)
            let record = PrimaryMirrorRecord(
                volumeID: volume.id, targetHost: "127.0.0.1", targetPort: 1, targetVolume: "dst", extentSize: 1 << 20,
                state: state, generations: MirrorGenerations(pairID: 1, synced: 1, current: 1), frameSize: 1 << 20,
                createdAt: 0, lastError: nil)
            try store.save(record, to: store.primaryPath(volume.id))
            let map = try ChangeMap.create(file: mapFile, executor: executor, extentSize: 1 << 20, volumeSize: 8 << 20)
            var logger = Logger(label: "t")
            logger.logLevel = .critical
            mirror = PrimaryMirror(
                record: record, changeMap: map, pool: pool, executor: executor, store: store,
                settings: ReplicationSettings(secret: nil, node: "p", group: MultiThreadedEventLoopGroup.singleton),
                logger: logger)
        }

        func storedRecord() throws -> PrimaryMirrorRecord {
            try store.load(PrimaryMirrorRecord.self, from: store.primaryPath(mirror.record.volumeID))
        }

        func close() {
            pool.close()
            executor.shutdown()
        }

        /// A host write of `count` bytes of `byte` at `offset` through the mirror (the local part a no-op).
        func write(at offset: UInt64, byte: UInt8) async throws {
            let local: @Sendable () async throws -> Void = {}
            try await mirror.write(.write(offset: offset, data: ByteBuffer(repeating: byte, count: 4096)), fua: false, local: local)
        }
    }

    @Test("a change map sync failure fails the write, fractures durably and marks the map lost")
    func changeMapFailureFractures() async throws {
        let f = try Fixture(state: .mirrored)
        defer { f.close() }
        f.mapFile.failNextSyncs()
        await #expect(throws: CairnIO.IOError.self) { try await f.write(at: 0, byte: 1) }
        let record = try f.storedRecord()
        #expect(record.state == .fractured, "\(record)")
        #expect(record.changeMapLost == true)
        #expect(!f.pool.hasFailed)
        // Later writes are refused too: the map is never rewritten over the lost pages.
        await #expect(throws: CairnIO.IOError.self) { try await f.write(at: 2 << 20, byte: 2) }
    }

    @Test("a fracture that cannot be recorded stops the pool's writes")
    func unrecordableFractureStopsThePool() async throws {
        let f = try Fixture(state: .mirrored)
        defer { f.close() }
        f.fileSystem.failNextDirectorySyncs(4)
        await f.mirror.fracture("the target stopped answering")
        #expect(f.pool.hasFailed)
        #expect(f.pool.status().failure?.contains("primary-") == true, "\(String(describing: f.pool.status().failure))")
        #expect(throws: EngineError.self) { try f.pool.flush() }
    }
}
