import CairnIO
import Foundation
import Testing

@testable import CairnReplication

@Suite("change map")
struct ChangeMapTests {
    static func scratch() -> String {
        let path = NSTemporaryDirectory() + "cairn-changemap-\(UUID().uuidString)"
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    @Test("write-intent bits are durable before beginWrite returns and survive a reopen")
    func writeIntentPersists() async throws {
        let directory = Self.scratch()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let executor = IOExecutor(threadCount: 1, queueCapacity: 64)
        defer { executor.shutdown() }
        let path = directory + "/m.map"
        let map = try ChangeMap.create(path: path, executor: executor, extentSize: 1 << 20, volumeSize: 100 << 20)
        #expect(map.extentCount == 100)
        #expect(map.extents(offset: (1 << 20) - 1, length: 2) == 0...1)

        // Mirrored write: active bit, durable at once, not dirty.
        try await map.beginWrite(3...3, dirty: false)
        #expect(try ChangeMap.open(path: path, executor: executor).dirtyExtents() == [3])
        map.endWrite(3...3, targetMissed: false)
        #expect(map.dirtyCount == 0 && map.changedCount == 1)

        // A write the target missed: dirty. A fractured write: dirty from the start.
        try await map.beginWrite(7...8, dirty: false)
        map.endWrite(7...8, targetMissed: true)
        try await map.beginWrite(99...99, dirty: true)
        map.endWrite(99...99, targetMissed: false)
        #expect(map.dirtyExtents() == [7, 8, 99])

        // Checkpoint: idle active extents clear; dirty ones stay.
        let start = map.checkpointBegin()
        try await map.clearIdle(start)
        #expect(map.changedCount == 3)
        // After a crash every persisted bit comes back dirty.
        let reopened = try ChangeMap.open(path: path, executor: executor)
        #expect(reopened.dirtyExtents() == [7, 8, 99])
        reopened.clearDirty([7, 8], copiedSince: reopened.dirtyClock)
        try await reopened.makeDurable()
        #expect(try ChangeMap.open(path: path, executor: executor).dirtyExtents() == [99])
    }

    @Test("a bit set again after a copy started is not cleared by that copy")
    func clearRespectsClock() async throws {
        let directory = Self.scratch()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let executor = IOExecutor(threadCount: 1, queueCapacity: 64)
        defer { executor.shutdown() }
        let map = try ChangeMap.create(path: directory + "/m.map", executor: executor, extentSize: 4096, volumeSize: 1 << 20)
        map.markDirty([1, 2])
        let clock = map.dirtyClock
        map.markDirty([2])  // a write the target missed while extent 2 was being copied
        map.clearDirty([1, 2], copiedSince: clock)
        #expect(map.dirtyExtents() == [2])
    }

    @Test("an extent written during a checkpoint stays set")
    func checkpointKeepsBusyExtents() async throws {
        let directory = Self.scratch()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let executor = IOExecutor(threadCount: 1, queueCapacity: 64)
        defer { executor.shutdown() }
        let map = try ChangeMap.create(path: directory + "/m.map", executor: executor, extentSize: 4096, volumeSize: 1 << 20)
        try await map.beginWrite(5...5, dirty: false)  // in flight when the checkpoint begins
        let start = map.checkpointBegin()
        map.endWrite(5...5, targetMissed: false)  // completes after the flushes may have started
        try await map.clearIdle(start)
        #expect(map.changedCount == 1)
        try await map.clearIdle(map.checkpointBegin())
        #expect(map.changedCount == 0)
        // Promoting the activity log (a link failure) turns active bits into dirty ones.
        try await map.beginWrite(9...9, dirty: false)
        map.endWrite(9...9, targetMissed: false)
        map.promoteActive()
        #expect(map.dirtyExtents() == [9])
    }
}

@Suite("overlap gate")
struct OverlapGateTests {
    @Test("overlapping ranges run one after the other, in arrival order; disjoint ones at once")
    func ordering() async throws {
        let gate = OverlapGate()
        let first = await gate.acquire(0..<100)
        let disjoint = await gate.acquire(100..<200)  // granted at once
        let order = OrderLog()
        let waiter = Task {
            await gate.withRange(50..<60) { await order.append("second") }
        }
        try await Task.sleep(nanoseconds: 50_000_000)
        await order.append("first")
        gate.release(first)
        await waiter.value
        gate.release(disjoint)
        #expect(await order.entries == ["first", "second"])
    }
}

actor OrderLog {
    var entries: [String] = []
    func append(_ entry: String) { entries.append(entry) }
}
