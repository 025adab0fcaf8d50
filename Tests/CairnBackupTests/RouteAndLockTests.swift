@testable import CairnBackup
import CairnTestSupport
import Foundation
import Synchronization
import Testing

/// The two synchronization pieces under the one-way mirror, under contention: a hold never overlaps a
/// request, and exclusive range locks never overlap anything on the same blocks.
@Suite struct RouteAndLockTests {
    @Test func aHoldNeverOverlapsARequest() {
        let route = VolumeRoute()
        let running = Atomic<Int>(0)
        let violations = Atomic<Int>(0)
        let requests = Atomic<Int>(0)
        let stop = Atomic<Bool>(false)
        let group = DispatchGroup()
        for _ in 0..<4 {
            group.enter()
            Thread {
                defer { group.leave() }
                while !stop.load(ordering: .relaxed) {
                    try? route.perform({
                        running.add(1, ordering: .sequentiallyConsistent)
                        running.subtract(1, ordering: .sequentiallyConsistent)
                        requests.add(1, ordering: .relaxed)
                    }, mirrored: { _ in })
                }
            }.start()
        }
        // Holds start once requests run, and go on until requests ran between them: on a loaded machine
        // the workers may get no CPU for a while, and holds with no request around them prove nothing.
        let deadline = ContinuousClock.now + .seconds(60)
        while requests.load(ordering: .relaxed) == 0 && ContinuousClock.now < deadline { usleep(100) }
        let before = requests.load(ordering: .relaxed)
        var holds = 0
        while holds < 200 || (requests.load(ordering: .relaxed) == before && ContinuousClock.now < deadline) {
            route.hold {
                if running.load(ordering: .sequentiallyConsistent) != 0 { violations.add(1, ordering: .relaxed) }
                usleep(50)
                if running.load(ordering: .sequentiallyConsistent) != 0 { violations.add(1, ordering: .relaxed) }
            }
            holds += 1
        }
        let during = requests.load(ordering: .relaxed) - before
        stop.store(true, ordering: .relaxed)
        // A deadline, so a stuck worker fails the test instead of hanging the run.
        #expect(group.wait(timeout: .now() + 120) == .success, "the workers did not stop")
        #expect(violations.load(ordering: .relaxed) == 0)
        #expect(before > 0 && during > 0, "requests before the holds: \(before), between them: \(during)")
    }

    @Test func exclusiveRangesExcludeEachOther() {
        let locks = RangeLockTable()
        let owners = Mutex<[UInt64: Int]>([:])
        let violations = Atomic<Int>(0)
        let group = DispatchGroup()
        for worker in 0..<4 {
            group.enter()
            Thread {
                defer { group.leave() }
                var random = SeededGenerator(seed: UInt64(worker) + 1)
                for _ in 0..<2000 {
                    let offset = UInt64.random(in: 0..<16, using: &random) * 32768
                    let length = UInt64.random(in: 1...4, using: &random) * 32768
                    let exclusive = Bool.random(using: &random)
                    let blocks = RangeLockTable.blocks(offset: offset, length: length)
                    locks.withRange(offset: offset, length: length, exclusive: exclusive) {
                        guard exclusive else { return }
                        owners.withLock { held in
                            for block in blocks where held[block] != nil { violations.add(1, ordering: .relaxed) }
                            for block in blocks { held[block] = worker }
                        }
                        owners.withLock { held in for block in blocks { held[block] = nil } }
                    }
                }
            }.start()
        }
        #expect(group.wait(timeout: .now() + 120) == .success, "the workers did not finish")
        #expect(violations.load(ordering: .relaxed) == 0)
        #expect(locks.isIdle)
    }
}
