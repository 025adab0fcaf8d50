@testable import CairnEngine
import Testing

/// `BlockStripes`: which writes exclude each other, and that a refused try-lock holds nothing.
@Suite struct BlockStripesTests {
    let stripes = BlockStripes()
    let block = BlockStripes.granule
    /// The distance at which two blocks share a mutex.
    var period: UInt64 { block * UInt64(BlockStripes.count) }

    @Test("writes to other blocks of one chunk do not exclude each other; the same block does")
    func perBlock() {
        stripes.withLocks(at: 0, length: block) {
            #expect(stripes.withLocksIfFree(at: block, length: block) { true } == true)
            #expect(stripes.withLocksIfFree(at: 0, length: 512) { true } == nil)
            #expect(stripes.withLocksIfFree(at: period, length: block) { true } == nil)
        }
    }

    @Test("a range that wraps past the last stripe, or covers all of them, excludes what it covers")
    func wrapAround() {
        let end = period - block
        stripes.withLocks(at: end, length: 2 * block) {
            #expect(stripes.withLocksIfFree(at: end, length: block) { true } == nil)
            #expect(stripes.withLocksIfFree(at: period, length: block) { true } == nil)
            #expect(stripes.withLocksIfFree(at: block, length: block) { true } == true)
        }
        stripes.withLocks(at: 3 * block, length: 2 * period) {
            #expect(stripes.withLocksIfFree(at: 77 * block, length: block) { true } == nil)
        }
    }

    @Test("a try-lock refused half-way releases the stripes it took")
    func refusedTryLockHoldsNothing() {
        stripes.withLocks(at: 8 * block, length: block) {
            #expect(stripes.withLocksIfFree(at: 0, length: 16 * block) { true } == nil)
        }
        // Every stripe the refused attempt took is free again: a blocking lock of them all returns.
        #expect(stripes.withLocksIfFree(at: 0, length: 16 * block) { true } == true)
        stripes.withLocks(at: period - 4 * block, length: 8 * block) {}
        #expect(stripes.withLocksIfFree(at: 0, length: period) { true } == true)
    }
}
