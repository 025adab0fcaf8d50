import CairnIO
import CairnTestSupport
import Testing

@testable import CairnReplication

/// A change map whose sync fails once (Linux's report-once semantics) stays failed: the bits it had
/// to write may be gone from the disk while a retry's sync would succeed.
@Suite("change map failures")
struct ChangeMapFailureTests {
    @Test("a failed sync is final for makeDurable and markDirtyDurably")
    func failedSyncIsFinal() async throws {
        let executor = IOExecutor(threadCount: 1, queueCapacity: 16)
        defer { executor.shutdown() }
        let file = SimulatedStorageFile(path: "/pool/mirrors/primary-1.map")
        let map = try ChangeMap.create(file: file, executor: executor, extentSize: 1 << 20, volumeSize: 64 << 20)
        try await map.beginWrite(1...1, dirty: true)
        file.failNextSyncs()
        await #expect(throws: IOError.self) { try await map.beginWrite(5...5, dirty: true) }
        #expect(map.hasFailed)
        // The file would sync now; the map must not pretend.
        await #expect(throws: IOError.self) { try await map.makeDurable() }
        #expect(throws: IOError.self) { try map.markDirtyDurably(9...9) }
        // What the disk holds: extent 1 only.
        var random = SystemRandomNumberGenerator()
        let disk = SimulatedStorageFile(path: file.path, durable: file.crashImage(using: &random))
        #expect(try ChangeMap.open(file: disk, executor: executor).dirtyExtents() == [1])
    }
}
