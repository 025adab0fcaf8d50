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

/// A generator that makes a simulated power cut lose every change not yet synced.
struct LoseEverythingUnsynced: RandomNumberGenerator {
    mutating func next() -> UInt64 { 0 }
}

/// Establish ordering: the initial sync copies what the primary's page cache holds (acknowledged but
/// never flushed writes too); a bit is cleared only once both sides flushed, so after a primary power
/// cut the primary still holds everything the map calls clean, and is never older than the target.
@Suite("resync durability")
struct ResyncDurabilityTests {
    @Test("after the initial sync, a primary power cut keeps every byte the map says the target holds")
    func clearedExtentsAreDurableOnThePrimary() async throws {
        let secret = try ReplicationSecret(bytes: Array("in-process-secret-0123456789".utf8))
        let target = try InProcessMirrorTests.Node("target", secret: secret)
        defer { target.close() }
        let server = try await MirrorTargetServer.start(
            host: "127.0.0.1", port: 0, service: target.replication.target, secret: secret,
            group: MultiThreadedEventLoopGroup.singleton, logger: Logger(label: "target"))

        let directory = SimulatedMirrorNode.directoryRoot + "cairn-primary-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var options = PoolOptions()
        options.commitIntervalNanoseconds = 3_600_000_000_000
        options.logger.logLevel = .critical
        let media = SimulatedMedia()
        let pool = try Pool(media: media, options: options)
        let executor = IOExecutor(threadCount: 2, queueCapacity: 256)
        var settings = ReplicationSettings(secret: secret, node: "primary", group: MultiThreadedEventLoopGroup.singleton)
        settings.frameTimeout = InProcessMirrorTests.frameTimeout
        // No checkpoint during the test: only the resync's own flushes may make the data durable.
        settings.checkpointInterval = 3600
        let replication = try Replication(
            pool: pool, executor: executor, dataDirectory: directory, settings: settings, logger: Logger(label: "p"))
        defer {
            replication.shutdown()
            pool.close()
            executor.shutdown()
        }
        let volume = try pool.volumes.create(name: "src", size: 4 << 20, chunkSize: 65536)
        // Acknowledged, never flushed: only in the primary's page cache.
        let pattern = [UInt8](repeating: 0x5A, count: 1 << 20)
        try pattern.withUnsafeBytes { try pool.write(volumeID: volume.id, offset: 1 << 20, source: .bytes($0), fua: false) }

        _ = try await replication.establish(
            volume: "src", target: "127.0.0.1:\(server.port)/dst", extentSize: 256 << 10, discardTargetChanges: false)
        var info = try replication.info(volume: "src")
        for _ in 0..<1500 where !(info.state == "mirrored" && info.dirtyExtents == 0) {
            try await Task.sleep(nanoseconds: 20_000_000)
            info = try replication.info(volume: "src")
        }
        try #require(info.state == "mirrored" && info.dirtyExtents == 0, "\(info)")
        #expect(try target.bytes("dst", 1 << 20, 1 << 20) == pattern)

        var cut = LoseEverythingUnsynced()
        let image = media.crashImage(using: &cut)
        let reopened = try Pool(media: image, options: options)
        defer { reopened.close() }
        var bytes = [UInt8](repeating: 0, count: 1 << 20)
        _ = try bytes.withUnsafeMutableBytes {
            try reopened.read(volumeID: try reopened.volumes.id(named: "src"), offset: 1 << 20, into: $0)
        }
        #expect(bytes == pattern, "the target holds data the primary lost, under a clean change map")
        await server.close()
    }
}
