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
