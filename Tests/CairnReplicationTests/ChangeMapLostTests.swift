import CairnEngine
import CairnIO
import Foundation
import Logging
import MirrorProtocol
import NIOPosix
import Testing

@testable import CairnReplication

/// A mirror whose change map failed says so in its record (`changeMapLost`); the next start rebuilds
/// the map with every extent dirty, so the resync copies everything, and clears the mark durably.
@Suite("lost change map")
struct ChangeMapLostTests {
    @Test("a record with changeMapLost restarts with every extent dirty, even over an unreadable map file")
    func lostMapIsRebuiltAllDirty() throws {
        let directory = NSTemporaryDirectory() + "cairn-maplost-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let pool = try Pool.open(directory: directory)
        defer { pool.close() }
        let executor = IOExecutor(threadCount: 1, queueCapacity: 16)
        defer { executor.shutdown() }
        let volume = try pool.volumes.create(name: "src", size: 8 << 20, chunkSize: 65536)
        let store = try MirrorRecordStore(dataDirectory: directory)
        let record = PrimaryMirrorRecord(
            volumeID: volume.id, targetHost: "127.0.0.1", targetPort: 1, targetVolume: "dst", extentSize: 1 << 20,
            state: .fractured, generations: MirrorGenerations(pairID: 1, synced: 1, current: 2), frameSize: 1 << 20,
            createdAt: 0, lastError: "the change map could not be made durable", changeMapLost: true)
        try store.save(record, to: store.primaryPath(volume.id))
        // The map file is garbage: a restart must not depend on it.
        try Data("not a map".utf8).write(to: URL(fileURLWithPath: store.changeMapPath(volume.id)))

        let settings = ReplicationSettings(secret: nil, node: "p", group: MultiThreadedEventLoopGroup.singleton)
        let replication = try Replication(
            pool: pool, executor: executor, dataDirectory: directory, settings: settings, logger: Logger(label: "t"))
        defer { replication.shutdown() }
        let mirror = try #require(replication.primary(volumeID: volume.id))
        #expect(mirror.changeMap.dirtyCount == 8)
        #expect(try store.load(PrimaryMirrorRecord.self, from: store.primaryPath(volume.id)).changeMapLost == nil)
        #expect(try ChangeMap.open(path: store.changeMapPath(volume.id), executor: executor).dirtyCount == 8)
    }
}
