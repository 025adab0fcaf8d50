import CairnEngine
import CairnIO
import Foundation
import Logging
import MirrorProtocol
import NIOCore
import Testing

@testable import CairnReplication

/// The target's record changes are serialized and atomic: concurrent first host writes after a sever
/// all succeed (each record save uses its own temporary file) and leave one consistent record.
@Suite("mirror target record updates")
struct TargetRecordUpdateTests {
    @Test("concurrent first writes after a sever all succeed and mark the record modified once")
    func concurrentFirstWrites() async throws {
        let f = try TargetTablesTests.Fixture()
        defer { f.close() }
        let handle = try await TargetChangesTests.handle(f)
        #expect(await f.send(.sever, MirrorHandleValue(handle: handle).payload).remoteError() == nil)
        let service = f.service
        let writers = 8
        try await withThrowingTaskGroup(of: Void.self) { group in
            for writer in 0..<writers {
                group.addTask {
                    try service.beforeHostWrite(volumeID: handle, offset: UInt64(writer) << 20, length: 4096)
                }
            }
            try await group.waitForAll()
        }
        #expect(service.changedExtents(volumeID: handle) == UInt64(writers))
        let store = try MirrorRecordStore(dataDirectory: f.directory)
        let record = try store.load(TargetMirrorRecord.self, from: store.targetPath(handle))
        #expect(record.modified && record.severed)
        // No temporary file is left behind.
        let names = try FileManager.default.contentsOfDirectory(atPath: store.directory)
        #expect(!names.contains { $0.contains(AtomicFile.temporaryMarker) })
    }
}

/// Transitions the flag-based target got wrong: a late `synchronized` after a promotion, and a host write
/// reaching a volume that is still read-only.
@Suite("mirror target transitions")
struct TargetTransitionTests {
    typealias Fixture = TargetTablesTests.Fixture

    @Test("a synchronized that arrives after a promotion is refused: the promotion and the target's changes stand")
    func synchronizedAfterPromotion() async throws {
        let f = try Fixture()
        defer { f.close() }
        let handle = try await TargetChangesTests.handle(f)
        // The frame passed the ownership check just before the promotion, and is applied after it.
        let promoted = try f.service.promote(volumeID: handle)
        try TargetChangesTests.hostWrite(f, handle, offset: 0, byte: 1)
        #expect(throws: MirrorRemoteError.self) { try f.service.update(handle, command: .synchronized, value: 9) }
        let record = try #require(f.service.records().first)
        #expect(record.promoted && record.modified && record.promotedGeneration == promoted.promotedGeneration)
        #expect(f.service.changedExtents(volumeID: handle) == 1)
        #expect(!f.service.isProtected(volumeID: handle))
    }

    @Test("a host write to a paired volume that is not severed is refused before anything is recorded")
    func hostWriteWhileMirroring() async throws {
        let f = try Fixture()
        defer { f.close() }
        let handle = try await TargetChangesTests.handle(f)
        #expect(f.service.hostWritesNeedBookkeeping(volumeID: handle))
        #expect(throws: ReplicationError.self) { try f.service.beforeHostWrite(volumeID: handle, offset: 0, length: 4096) }
        #expect(f.service.records().first?.modified == false)
        #expect(f.service.changedExtents(volumeID: handle) == 0)
    }

    @Test("concurrent first writes after a take was interrupted all succeed and record the writes during the take")
    func concurrentWritesDuringTake() async throws {
        let f = try Fixture()
        defer { f.close() }
        let handle = try await TargetChangesTests.handle(f)
        #expect(await f.send(.sever, MirrorHandleValue(handle: handle).payload).remoteError() == nil)
        try TargetChangesTests.hostWrite(f, handle, offset: 0, byte: 1)
        #expect(await f.establish("dst", options: [.create, .takeTargetChanges]).remoteError() == nil)
        #expect(await f.send(.sever, MirrorHandleValue(handle: handle).payload).remoteError() == nil)
        let service = f.service
        try await withThrowingTaskGroup(of: Void.self) { group in
            for writer in 0..<32 {
                group.addTask {
                    try service.beforeHostWrite(volumeID: handle, offset: UInt64(writer % 8) << 20, length: 4096)
                }
            }
            try await group.waitForAll()
        }
        let store = try MirrorRecordStore(dataDirectory: f.directory)
        let record = try store.load(TargetMirrorRecord.self, from: store.targetPath(handle))
        #expect(record.state == .takeInterrupted(promotedGeneration: nil, writtenDuringTake: true))
        #expect(service.changedExtents(volumeID: handle) == 8)
        // Resuming the take is refused now: the newest writes are not in the primary's pull set.
        #expect(await f.establish("dst", options: [.create, .takeTargetChanges]).remoteError()?.code == .diverged)
    }
}
