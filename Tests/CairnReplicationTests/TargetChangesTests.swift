import CairnEngine
import CairnIO
import Foundation
import Logging
import MirrorProtocol
import NIOCore
import Testing

@testable import CairnReplication

/// The target's change map (write-intent for host writes made while severed or promoted), promotion, and
/// the frames the primary uses to take the target's changes.
@Suite("mirror target changes and promotion")
struct TargetChangesTests {
    typealias Fixture = TargetTablesTests.Fixture

    static func handle(_ f: Fixture) async throws -> UInt64 {
        let reply = await f.establish("dst")
        #expect(reply.remoteError() == nil)
        return try MirrorEstablishReply.decode(payload: reply.payload).handle
    }

    /// A host write on the target as the daemon issues it: write-intent first, then the data.
    static func hostWrite(_ f: Fixture, _ volume: UInt64, offset: UInt64, byte: UInt8, length: Int = 4096) throws {
        try f.service.beforeHostWrite(volumeID: volume, offset: offset, length: UInt64(length))
        try [UInt8](repeating: byte, count: length).withUnsafeBytes {
            try f.pool.write(volumeID: volume, offset: offset, source: .bytes($0), fua: false)
        }
    }

    static func changes(_ f: Fixture, _ handle: UInt64) async throws -> [UInt64] {
        let reply = await f.send(.targetChanges, MirrorHandleValue(handle: handle).payload)
        #expect(reply.remoteError() == nil, "\(String(describing: reply.remoteError()))")
        return try MirrorTargetChanges.decode(payload: reply.payload).extents
    }

    @Test("host writes while severed are in the target's change map, durably, before their data")
    func severedWritesAreTracked() async throws {
        let f = try Fixture()
        defer { f.close() }
        let handle = try await Self.handle(f)
        #expect(try await Self.changes(f, handle).isEmpty)
        #expect(await f.send(.sever, MirrorHandleValue(handle: handle).payload).remoteError() == nil)
        // 1 MiB extents: 4 KiB at 0, 8 KiB straddling 3 MiB, 4 KiB at 7 MiB.
        try Self.hostWrite(f, handle, offset: 0, byte: 1)
        try Self.hostWrite(f, handle, offset: (3 << 20) - 4096, byte: 2, length: 8192)
        try Self.hostWrite(f, handle, offset: 7 << 20, byte: 3)
        #expect(f.service.changedExtents(volumeID: handle) == 4)

        // What is on disk (a restarted service reads the file) lists the same extents.
        let reopened = try MirrorTargetService(
            pool: f.pool, executor: f.executor, store: MirrorRecordStore(dataDirectory: f.directory), logger: Logger(label: "t"))
        #expect(reopened.changedExtents(volumeID: handle) == 4)

        // No choice: refused as target_changed; nothing changes (still writable, map kept).
        #expect(await f.establish("dst", options: [.create]).remoteError()?.code == .targetChanged)
        #expect(!f.service.isProtected(volumeID: handle))
        #expect(f.service.changedExtents(volumeID: handle) == 4)
        // Both choices at once are refused.
        #expect(
            await f.establish("dst", options: [.create, .takeTargetChanges, .discardTargetChanges]).remoteError()?.code
                == .invalidArgument)

        // Take: accepted, read-only again, the map stays until `synchronized`.
        let taken = await f.establish("dst", options: [.create, .takeTargetChanges])
        #expect(taken.remoteError() == nil)
        #expect(try MirrorEstablishReply.decode(payload: taken.payload).fullSyncNeeded == false)
        #expect(f.service.isProtected(volumeID: handle))
        #expect(try await Self.changes(f, handle) == [0, 2, 3, 7])
        // A reconnect during the pull (same option) still finds the changes.
        #expect(await f.establish("dst", options: [.create, .takeTargetChanges]).remoteError() == nil)
        #expect(try await Self.changes(f, handle) == [0, 2, 3, 7])

        // The primary reads the bytes back; reads are bounded by the largest frame.
        let read = await f.send(.read, MirrorRange(handle: handle, offset: (3 << 20) - 4096, length: 8192).payload)
        #expect(read.remoteError() == nil)
        #expect(Array(read.payload.readableBytesView) == [UInt8](repeating: 2, count: 8192))
        let tooBig = MirrorRange(handle: handle, offset: 0, length: UInt64(MirrorLimits.maximumFrameSize) + 1)
        #expect(await f.send(.read, tooBig.payload).remoteError()?.code == .invalidArgument)

        // Synchronized: the changes were taken; the map and its file go.
        #expect(await f.send(.synchronized, MirrorHandleValue(handle: handle, value: 0).payload).remoteError() == nil)
        #expect(f.service.changedExtents(volumeID: handle) == 0)
        let mapPath = try MirrorRecordStore(dataDirectory: f.directory).targetChangeMapPath(handle)
        #expect(!FileManager.default.fileExists(atPath: mapPath))
        #expect(try await Self.changes(f, handle).isEmpty)
        #expect(await f.establish("dst", options: [.create]).remoteError() == nil)
    }

    @Test("promote: writable here, the primary is fenced off and learns of it at its next establish")
    func promote() async throws {
        let f = try Fixture()
        defer { f.close() }
        let handle = try await Self.handle(f)
        let data = MirrorWriteHeader.payload(handle: handle, offset: 0, data: ByteBuffer(bytes: [UInt8](repeating: 9, count: 4096)))
        #expect(await f.send(.write, data).remoteError() == nil)

        let record = try f.service.promote(volumeID: handle)
        #expect(record.promoted == true && record.severed && record.promotedGeneration != nil)
        #expect(!f.service.isProtected(volumeID: handle))
        // The primary's next data frame is refused with a reason that names the choices.
        let refused = await f.send(.write, data).remoteError()
        #expect(refused?.code == .targetChanged)
        #expect(refused?.message.contains("--take-target-changes") == true)
        let status = try MirrorTargetStatus.decode(payload: await f.send(.status, ByteBuffer()).payload)
        #expect(status.volumes.first { $0.name == "dst" }?.role == "promoted")

        // Promoted but not yet written: still a choice to make (the target's data is a new generation).
        #expect(await f.establish("dst", options: [.create]).remoteError()?.code == .targetChanged)
        try Self.hostWrite(f, handle, offset: 5 << 20, byte: 4)
        #expect(await f.establish("dst", options: [.create]).remoteError()?.code == .targetChanged)

        // Discard: the map goes, the primary is told to copy everything.
        let discarded = await f.establish("dst", options: [.create, .discardTargetChanges])
        #expect(discarded.remoteError() == nil)
        #expect(try MirrorEstablishReply.decode(payload: discarded.payload).fullSyncNeeded)
        #expect(f.service.changedExtents(volumeID: handle) == 0)
        #expect(f.service.isProtected(volumeID: handle))
        #expect(try await Self.changes(f, handle).isEmpty)
    }

    @Test("the target-changes payload round-trips and rejects inconsistent lengths")
    func changesCodec() throws {
        let changes = MirrorTargetChanges(extentSize: 1 << 20, extentCount: 130, words: [0b1011, 0, 1 << 1])
        #expect(try MirrorTargetChanges.decode(payload: changes.payload) == changes)
        #expect(changes.extents == [0, 1, 3, 129])
        var wrong = changes
        wrong.words = [1]
        #expect(throws: MirrorPayloadError.self) { try MirrorTargetChanges.decode(payload: wrong.payload) }
        var size = changes
        size.extentSize = 3
        #expect(throws: MirrorPayloadError.self) { try MirrorTargetChanges.decode(payload: size.payload) }
    }
}
