import CairnEngine
import CairnIO
import Foundation
import Logging
import MirrorProtocol
import NIOCore
import NIOPosix
import Testing

@testable import CairnReplication

/// Failover and back, in one process (two pools, a real loopback link): promote the target, write on
/// both sides, the refusal that names both choices, `--take-target-changes` copying target → primary, host
/// writes during that pull, and `--checksum` resync sending only extents whose digests differ.
@Suite("mirror take-target-changes and checksum resync")
struct TakeTargetChangesTests {
    typealias Node = InProcessMirrorTests.Node
    static let secret = try! ReplicationSecret(bytes: Array("in-process-secret-0123456789".utf8))
    static let size: UInt64 = 4 << 20
    static let extent: UInt64 = 256 << 10

    /// A primary with "src" mirrored to "dst" on a target, in sync, both holding `fill` everywhere.
    static func mirrored(fill: UInt8 = 0x3C, extentDelay: Double = 0) async throws -> (Node, Node, MirrorTargetServer) {
        let primary = try Node("primary", secret: secret, resyncExtentDelay: extentDelay)
        let target = try Node("target", secret: secret)
        let server = try await MirrorTargetServer.start(
            host: "127.0.0.1", port: 0, service: target.replication.target, secret: secret,
            group: MultiThreadedEventLoopGroup.singleton, logger: Logger(label: "target"))
        let volume = try primary.pool.volumes.create(name: "src", size: size, chunkSize: 65536)
        try [UInt8](repeating: fill, count: Int(size)).withUnsafeBytes {
            try primary.pool.write(volumeID: volume.id, offset: 0, source: .bytes($0), fua: false)
        }
        _ = try await primary.replication.establish(
            volume: "src", target: "127.0.0.1:\(server.port)/dst", extentSize: extent, discardTargetChanges: false)
        _ = try await InProcessMirrorTests.waitFor(primary, "src") { $0.state == "mirrored" }
        return (primary, target, server)
    }

    /// A host write through the primary's mirror, as the NBD export issues it.
    static func primaryWrite(_ node: Node, offset: UInt64, byte: UInt8, length: Int = 4096) async throws {
        let id = try node.pool.volumes.id(named: "src")
        let mirror = try #require(node.replication.primary(volumeID: id))
        let data = ByteBuffer(bytes: [UInt8](repeating: byte, count: length))
        let pool = node.pool
        try await mirror.write(.write(offset: offset, data: data), fua: false) {
            try data.withUnsafeReadableBytes { try pool.write(volumeID: id, offset: offset, source: .bytes($0), fua: false) }
        }
    }

    /// A host write on the target (severed or promoted), as the daemon issues it: write-intent first.
    static func targetWrite(_ node: Node, offset: UInt64, byte: UInt8, length: Int = 4096) throws {
        let id = try node.pool.volumes.id(named: "dst")
        try node.replication.target.beforeHostWrite(volumeID: id, offset: offset, length: UInt64(length))
        try [UInt8](repeating: byte, count: length).withUnsafeBytes {
            try node.pool.write(volumeID: id, offset: offset, source: .bytes($0), fua: false)
        }
    }

    /// Runs `body` on a mirrored pair and closes both nodes afterwards, whatever happened.
    static func withMirror(
        extentDelay: Double = 0, _ body: (Node, Node) async throws -> Void
    ) async throws {
        let (primary, target, server) = try await mirrored(extentDelay: extentDelay)
        do {
            try await body(primary, target)
        } catch {
            await server.close()
            primary.close()
            target.close()
            throw error
        }
        await server.close()
        primary.close()
        target.close()
    }

    @Test("promote, write on both sides: refused naming both choices; take-target-changes makes both equal to the target")
    func promoteAndTake() async throws {
        try await Self.withMirror { primary, target in
            _ = try await target.replication.promoteTarget(volume: "dst")
            // The primary's next write finds the target fenced off: it fractures, the write is kept locally.
            try await Self.primaryWrite(primary, offset: 0, byte: 0xA1)
            #expect(try primary.replication.info(volume: "src").state == "fractured")
            try Self.targetWrite(target, offset: 1 << 20, byte: 0xB2, length: 8192)
            try Self.targetWrite(target, offset: 0, byte: 0xB3)

            // No choice: refused, naming both sides and both choices; nothing changes.
            let error = await #expect(throws: ReplicationError.self) {
                _ = try await primary.replication.reestablish(volume: "src", discardTargetChanges: false)
            }
            #expect(error?.code == .diverged)
            #expect(error?.message.contains("Both sides changed") == true, "\(String(describing: error))")
            #expect(error?.message.contains("--take-target-changes") == true && error?.message.contains("--discard-target-changes") == true)
            #expect(try primary.replication.info(volume: "src").state == "fractured")

            _ = try await primary.replication.reestablish(volume: "src", discardTargetChanges: false, takeTargetChanges: true)
            let info = try await InProcessMirrorTests.waitFor(primary, "src") {
                $0.state == "mirrored" && ($0.lastResync?.pulled ?? 0) > 0
            }
            #expect(!info.takingTargetChanges)
            #expect((info.lastResync?.pulled ?? 0) >= 2)
            #expect(try primary.bytes("src", 0, Int(Self.size)) == target.bytes("dst", 0, Int(Self.size)))
            // The target's bytes won where both wrote; its other change came back too.
            #expect(try primary.bytes("src", 0, 4096) == [UInt8](repeating: 0xB3, count: 4096))
            #expect(try primary.bytes("src", 1 << 20, 8192) == [UInt8](repeating: 0xB2, count: 8192))
            // The target is an ordinary mirror target again: read-only, no change map, not promoted.
            let id = try target.pool.volumes.id(named: "dst")
            #expect(target.replication.target.isProtected(volumeID: id))
            #expect(target.replication.target.changedExtents(volumeID: id) == 0)
            #expect(target.replication.target.records().first?.promoted != true)
            // And the primary mirrors again.
            try await Self.primaryWrite(primary, offset: 2 << 20, byte: 0xC4)
            #expect(try target.bytes("dst", 2 << 20, 4096) == [UInt8](repeating: 0xC4, count: 4096))
        }
    }

    @Test("host writes on the primary during the pull are not overwritten by older target data")
    func hostWritesDuringPull() async throws {
        // Slow enough (5 ms per extent pulled) that the writes below meet the pull.
        try await Self.withMirror(extentDelay: 0.005) { primary, target in
            _ = try await primary.replication.sever(volume: "src")
            // Every extent changed on the target, so the pull covers the whole volume.
            for extent in 0..<(Self.size / Self.extent) { try Self.targetWrite(target, offset: extent * Self.extent, byte: 0x55) }
            _ = try await primary.replication.reestablish(volume: "src", discardTargetChanges: false, takeTargetChanges: true)
            // Writes race the pull on purpose: whichever order they meet an extent in, the write must survive.
            var written: [(UInt64, UInt8)] = []
            for index in 0..<16 {
                let offset = UInt64(index) * Self.extent + 8192
                let byte = UInt8(0x80 + index)
                try await Self.primaryWrite(primary, offset: offset, byte: byte)
                written.append((offset, byte))
            }
            _ = try await InProcessMirrorTests.waitFor(primary, "src") { $0.state == "mirrored" }
            for (offset, byte) in written {
                #expect(try primary.bytes("src", offset, 4096) == [UInt8](repeating: byte, count: 4096), "at \(offset)")
            }
            #expect(try primary.bytes("src", 0, 4096) == [UInt8](repeating: 0x55, count: 4096))
            #expect(try primary.bytes("src", 0, Int(Self.size)) == target.bytes("dst", 0, Int(Self.size)))
        }
    }

    @Test("checksum resync: extents rewritten with the same bytes are compared and skipped, changed ones sent")
    func checksumResync() async throws {
        try await Self.withMirror { primary, target in
            _ = try await primary.replication.sever(volume: "src")
            // Six extents rewritten with what they already hold, two with new bytes.
            for extent in 0..<6 { try await Self.primaryWrite(primary, offset: UInt64(extent) * Self.extent, byte: 0x3C) }
            try await Self.primaryWrite(primary, offset: 10 * Self.extent, byte: 0x11)
            try await Self.primaryWrite(primary, offset: 12 * Self.extent, byte: 0x22)
            let dirty = try primary.replication.info(volume: "src").dirtyExtents
            #expect(dirty >= 8)

            _ = try await primary.replication.reestablish(volume: "src", discardTargetChanges: false, checksum: true)
            let info = try await InProcessMirrorTests.waitFor(primary, "src") {
                $0.state == "mirrored" && ($0.lastResync?.compared ?? 0) > 0
            }
            let result = try #require(info.lastResync)
            // Every extent the map holds is compared (the reconnect also turns the sequential writes' look-ahead
            // activity bits dirty: the over-marking this mode is for), only the two that differ are sent.
            #expect(result.compared >= dirty, "\(result)")
            #expect(result.sent == 2, "\(result)")
            #expect(result.skipped == result.compared - 2, "\(result)")
            #expect(try primary.bytes("src", 0, Int(Self.size)) == target.bytes("dst", 0, Int(Self.size)))
        }
    }

    @Test("the link fails during the pull: a host write to an extent not yet taken fails, others are tracked; the take resumes")
    func linkFailsDuringPull() async throws {
        // 50 ms per extent pulled: the promotion below lands while the pull is under way.
        try await Self.withMirror(extentDelay: 0.05) { primary, target in
            _ = try await primary.replication.sever(volume: "src")
            // The target changes the first half (extents 0-7); the primary's map is clean.
            for extent in 0..<8 { try Self.targetWrite(target, offset: UInt64(extent) * Self.extent, byte: 0x66) }
            _ = try await primary.replication.reestablish(volume: "src", discardTargetChanges: false, takeTargetChanges: true)
            // Fence the primary off mid-pull (as a failover would): its next read frame is refused.
            _ = try await target.replication.promoteTarget(volume: "dst")
            let fractured = try await InProcessMirrorTests.waitFor(primary, "src") { $0.state == "fractured" }
            #expect(fractured.takingTargetChanges && fractured.pullExtents > 0, "\(fractured)")

            // Extent 7 is still to be taken: a write there would be overwritten when the take resumes, so it fails.
            let refused = await #expect(throws: ReplicationError.self) {
                try await Self.primaryWrite(primary, offset: 7 * Self.extent, byte: 0x77)
            }
            #expect(refused?.message.contains("taking the target's changes") == true, "\(String(describing: refused))")
            // Extent 15 is not: tracked as usual, and copied to the target later.
            try await Self.primaryWrite(primary, offset: 15 * Self.extent, byte: 0x78)

            // The take resumes (the primary remembers the choice) and both sides end equal.
            _ = try await primary.replication.reestablish(volume: "src", discardTargetChanges: false)
            _ = try await InProcessMirrorTests.waitFor(primary, "src") { $0.state == "mirrored" && !$0.takingTargetChanges }
            #expect(try primary.bytes("src", 7 * Self.extent, 4096) == [UInt8](repeating: 0x66, count: 4096))
            #expect(try primary.bytes("src", 15 * Self.extent, 4096) == [UInt8](repeating: 0x78, count: 4096))
            #expect(try primary.bytes("src", 0, Int(Self.size)) == target.bytes("dst", 0, Int(Self.size)))
        }
    }

    @Test("a target written again while its changes were being taken: resuming the take is refused as diverged")
    func writtenDuringTake() async throws {
        try await Self.withMirror(extentDelay: 0.05) { primary, target in
            _ = try await primary.replication.sever(volume: "src")
            for extent in 0..<8 { try Self.targetWrite(target, offset: UInt64(extent) * Self.extent, byte: 0x66) }
            _ = try await primary.replication.reestablish(volume: "src", discardTargetChanges: false, takeTargetChanges: true)
            _ = try await target.replication.promoteTarget(volume: "dst")
            _ = try await InProcessMirrorTests.waitFor(primary, "src") { $0.state == "fractured" }
            try Self.targetWrite(target, offset: 12 * Self.extent, byte: 0x99)

            let error = await #expect(throws: ReplicationError.self) {
                _ = try await primary.replication.reestablish(volume: "src", discardTargetChanges: false)
            }
            #expect(error?.code == .diverged && error?.message.contains("written on the target again") == true, "\(String(describing: error))")
            // The explicit way out: the primary's data everywhere.
            _ = try await primary.replication.reestablish(volume: "src", discardTargetChanges: true)
            let done = try await InProcessMirrorTests.waitFor(primary, "src") { $0.state == "mirrored" }
            #expect(!done.takingTargetChanges)
            #expect(try primary.bytes("src", 0, Int(Self.size)) == target.bytes("dst", 0, Int(Self.size)))
        }
    }
}
