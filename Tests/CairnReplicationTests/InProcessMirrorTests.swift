import CairnEngine
import CairnIO
import Foundation
import Logging
import MirrorProtocol
import NIOCore
import NIOPosix
import Testing

@testable import CairnReplication

/// A primary and a target in one process (two pools, a real loopback link): the host write path, online
/// verify catching a difference made behind the mirror's back, and the resync that repairs it.
@Suite("mirror in one process")
struct InProcessMirrorTests {
    final class Node: @unchecked Sendable {
        let directory: String
        let pool: Pool
        let executor = IOExecutor(threadCount: 2, queueCapacity: 256)
        let replication: Replication

        init(_ label: String, secret: ReplicationSecret, resyncExtentDelay: Double = 0) throws {
            directory = NSTemporaryDirectory() + "cairn-\(label)-\(UUID().uuidString)"
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            pool = try Pool.open(directory: directory)
            var settings = ReplicationSettings(secret: secret, node: label, group: MultiThreadedEventLoopGroup.singleton)
            // Out of reach: nothing here tests timeouts (the two-daemon tests do, with a fault proxy). In
            // full runs every suite starts at once, and the target's establish (a volume, a change map and a
            // record, each made durable with fsyncs that wait behind the whole machine's writeback) has
            // taken 45 s: a 30 s frame timeout turned that into two failures at the same second.
            settings.frameTimeout = InProcessMirrorTests.frameTimeout
            settings.resyncExtentDelay = resyncExtentDelay
            replication = try Replication(
                pool: pool, executor: executor, dataDirectory: directory, settings: settings, logger: Logger(label: label))
        }

        func close() {
            replication.shutdown()
            pool.close()
            executor.shutdown()
            try? FileManager.default.removeItem(atPath: directory)
        }

        func bytes(_ volume: String, _ offset: UInt64, _ length: Int) throws -> [UInt8] {
            var bytes = [UInt8](repeating: 0xEE, count: length)
            let id = try pool.volumes.id(named: volume)
            _ = try bytes.withUnsafeMutableBytes { try pool.read(volumeID: id, offset: offset, into: $0) }
            return bytes
        }
    }

    /// Frame timeout of the in-process links (see `Node`).
    static let frameTimeout: Double = 600

    static func waitFor(_ node: Node, _ volume: String, _ condition: (MirrorInfo) -> Bool) async throws -> MirrorInfo {
        for _ in 0..<600 {
            let info = try node.replication.info(volume: volume)
            if condition(info) { return info }
            try await Task.sleep(nanoseconds: 20_000_000)
        }
        throw ReplicationError(.wrongState, "condition never met: \(try node.replication.info(volume: volume))")
    }

    @Test("host writes reach both sides; verify finds a difference made behind the mirror's back; resync repairs it")
    func verifyRepairs() async throws {
        let secret = try ReplicationSecret(bytes: Array("in-process-secret-0123456789".utf8))
        let primary = try Node("primary", secret: secret)
        let target = try Node("target", secret: secret)
        defer {
            primary.close()
            target.close()
        }
        let server = try await MirrorTargetServer.start(
            host: "127.0.0.1", port: 0, service: target.replication.target, secret: secret,
            group: MultiThreadedEventLoopGroup.singleton, logger: Logger(label: "target"))
        let volume = try primary.pool.volumes.create(name: "src", size: 4 << 20, chunkSize: 65536)
        let pattern = [UInt8](repeating: 0x3C, count: 1 << 20)
        try pattern.withUnsafeBytes { try primary.pool.write(volumeID: volume.id, offset: 1 << 20, source: .bytes($0), fua: false) }

        _ = try await primary.replication.establish(
            volume: "src", target: "127.0.0.1:\(server.port)/dst", extentSize: 256 << 10, discardTargetChanges: false)
        _ = try await Self.waitFor(primary, "src") { $0.state == "mirrored" }
        #expect(try primary.bytes("src", 0, 4 << 20) == target.bytes("dst", 0, 4 << 20))

        // The host write path: local and remote together.
        let mirror = try #require(primary.replication.primary(volumeID: volume.id))
        let data = ByteBuffer(bytes: [UInt8](repeating: 0x77, count: 8192))
        let pool = primary.pool
        try await mirror.write(.write(offset: 12288, data: data), fua: true) {
            try data.withUnsafeReadableBytes { try pool.write(volumeID: volume.id, offset: 12288, source: .bytes($0), fua: true) }
        }
        #expect(try target.bytes("dst", 12288, 8192) == [UInt8](repeating: 0x77, count: 8192))

        // Behind the mirror's back (no host could do this: the target volume is read-only to hosts).
        let dst = try target.pool.volumes.id(named: "dst")
        try [UInt8](repeating: 0x99, count: 4096).withUnsafeBytes {
            try target.pool.write(volumeID: dst, offset: 3 << 20, source: .bytes($0), fua: false)
        }
        #expect(try primary.bytes("src", 0, 4 << 20) != target.bytes("dst", 0, 4 << 20))

        _ = try primary.replication.verify(volume: "src")
        let job = try #require(mirror.counters.jobID)
        for _ in 0..<600 where primary.pool.jobs.job(job)?.state == .running { try await Task.sleep(nanoseconds: 20_000_000) }
        #expect(primary.pool.jobs.job(job)?.message?.contains("1 of 16 extents differed") == true, "\(String(describing: primary.pool.jobs.job(job)))")
        _ = try await Self.waitFor(primary, "src") { $0.state == "mirrored" && $0.dirtyExtents == 0 }
        #expect(try primary.bytes("src", 0, 4 << 20) == target.bytes("dst", 0, 4 << 20))
        await server.close()
    }
}
