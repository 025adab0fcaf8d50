import Foundation
import Synchronization
import Testing

@testable import CairnReplication

/// `establish` waits for host writes that started before the mirror existed: woken by the last one's end,
/// and told when one is stuck instead of going on without it.
@Suite("writes in flight when a mirror is established")
struct UnmirroredDrainTests {
    static func node() throws -> InProcessMirrorTests.Node {
        try InProcessMirrorTests.Node("drain", secret: TakeTargetChangesTests.secret)
    }

    @Test("the wait ends when the last unmirrored write ends, and not before")
    func wokenByTheLastWrite() async throws {
        let node = try Self.node()
        defer { node.close() }
        let replication = node.replication
        #expect(replication.routeWrite(volumeID: 7) == nil)
        #expect(replication.routeWrite(volumeID: 7) == nil)
        #expect(replication.routeWrite(volumeID: 8) == nil)
        let drained = Mutex<Bool?>(nil)
        let waiter = Task {
            let result = await replication.drainUnmirroredWrites(volumeID: 7, timeout: .seconds(600))
            drained.withLock { $0 = result }
        }
        // The waiter is registered before the writes end (or finds none and returns at once: then the
        // expectations below catch it).
        let deadline = ContinuousClock.now + .seconds(60)
        while replication.primaries.withLock({ $0.drainWaiters[7]?.isEmpty ?? true }) && drained.withLock({ $0 == nil })
            && ContinuousClock.now < deadline
        {
            await Task.yield()
        }
        replication.unmirroredWriteEnded(volumeID: 7)
        replication.unmirroredWriteEnded(volumeID: 8)
        #expect(replication.primaries.withLock { $0.drainWaiters[7]?.count } == 1, "one write to volume 7 is still in flight")
        #expect(drained.withLock { $0 } == nil)
        replication.unmirroredWriteEnded(volumeID: 7)
        await waiter.value
        #expect(drained.withLock { $0 } == true)
        #expect(await replication.drainUnmirroredWrites(volumeID: 7, timeout: .seconds(600)), "nothing in flight: no wait")
    }

    @Test("a write that never ends: the wait reports it when the timeout passes")
    func stuckWriteTimesOut() async throws {
        let node = try Self.node()
        defer { node.close() }
        #expect(node.replication.routeWrite(volumeID: 9) == nil)
        #expect(await node.replication.drainUnmirroredWrites(volumeID: 9, timeout: .milliseconds(50)) == false)
        #expect(node.replication.primaries.withLock { $0.drainWaiters[9]?.isEmpty ?? true }, "the expired waiter is gone")
        node.replication.unmirroredWriteEnded(volumeID: 9)
    }
}
