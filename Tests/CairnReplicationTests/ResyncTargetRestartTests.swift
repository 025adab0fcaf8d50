import CairnEngine
import CairnTestSupport
import Foundation
import Synchronization
import Testing

@testable import CairnReplication

/// A resync clears a batch's bits only once the target flushed the batch's data. When the target restarts
/// between the data frames and the flush (losing what it had not synced), the flush is retried on a new
/// connection, to a target that never got the data: its success must not clear the batch.
@Suite("resync across a target restart")
struct ResyncTargetRestartTests {
    @Test("the target restarts before the batch's flush: the batch is copied again, both sides end equal")
    func targetRestartBeforeBatchFlush() async throws {
        let secret = MirrorModelRun.secret
        let size = 1 << 20
        let directories = [try SimulatedMirrorNode.newDirectory("target"), try SimulatedMirrorNode.newDirectory("primary")]
        defer { for directory in directories { try? FileManager.default.removeItem(atPath: directory) } }
        var target = try SimulatedMirrorNode(
            label: "target", secret: secret, media: SimulatedMedia(), directory: directories[0], settings: { _ in })
        // An empty target volume, durable, so that the restart keeps it.
        _ = try target.pool.volumes.create(name: "dst", size: UInt64(size), chunkSize: 65536)
        try target.pool.flush()
        let link = try await FaultyLink.start(upstreamPort: try await target.serve(secret: secret))
        let primary = try SimulatedMirrorNode(
            label: "primary", secret: secret, media: SimulatedMedia(), directory: directories[1]
        ) { settings in
            settings.frameTimeout = 1
            // Room for the target's restart while the flush is retried.
            settings.retries = 20
        }
        let id = try primary.pool.volumes.create(name: "src", size: UInt64(size), chunkSize: 65536).id
        let pattern = (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 1) }
        try pattern.withUnsafeBytes { try primary.pool.write(volumeID: id, offset: 0, source: .bytes($0), fua: false) }
        try primary.pool.flush()

        // The initial sync's first flush: the target goes down instead (its copies not yet synced).
        let intercepted = Mutex(false)
        link.interceptNextFlush {
            link.setTarget(down: true)
            intercepted.withLock { $0 = true }
        }
        _ = try await primary.replication.establish(
            volume: "src", target: "127.0.0.1:\(link.port)/dst", extentSize: 64 << 10, discardTargetChanges: false)
        for _ in 0..<1500 where !intercepted.withLock({ $0 }) { try await Task.sleep(nanoseconds: 10_000_000) }
        try #require(intercepted.withLock { $0 }, "the initial sync never flushed")
        var cut = LoseEverythingUnsynced()
        let (media, directory) = try await target.powerCut(using: &cut)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        target = try SimulatedMirrorNode(label: "target", secret: secret, media: media, directory: directory, settings: { _ in })
        link.setTarget(down: false, port: try await target.serve(secret: secret))

        var info = try primary.replication.info(volume: "src")
        for _ in 0..<3000 where !(info.state == "mirrored" && info.dirtyExtents == 0) {
            try await Task.sleep(nanoseconds: 20_000_000)
            info = try primary.replication.info(volume: "src")
        }
        try #require(info.state == "mirrored" && info.dirtyExtents == 0, "\(info)")
        let here = try primary.bytes("src", size: size)
        let there = try target.bytes("dst", size: size)
        let differing = stride(from: 0, to: size, by: 64 << 10).filter { here[$0..<($0 + (64 << 10))] != there[$0..<($0 + (64 << 10))] }
        #expect(differing.isEmpty, "in sync, yet the target lacks extents \(differing.map { $0 >> 16 }) it lost in its restart")
        await link.close()
        await primary.close()
        await target.close()
    }
}
