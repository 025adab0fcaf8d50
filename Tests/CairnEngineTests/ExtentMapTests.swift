@testable import CairnEngine
import Testing

@Suite struct ExtentMapTests {
    @Test func setClearScanAndCount() {
        var map = ExtentMap(count: 130)
        #expect(map.isEmpty)
        let inserted = [map.insert(0), map.insert(64), map.insert(129), map.insert(64)]
        #expect(inserted == [true, true, true, false], "the second insert of 64 finds it set")
        #expect(map.members == [0, 64, 129])
        #expect(map.next(atOrAfter: 1) == 64)
        #expect(map.next(atOrAfter: 130) == nil)
        let removed = [map.remove(64), map.remove(64)]
        #expect(removed == [true, false])
        #expect(map.setCount == 2)
        #expect(!map.contains(500), "past the end is clear")
    }

    @Test func filledMapsStopAtTheLastExtent() {
        let map = ExtentMap(count: 70, filled: true)
        #expect(map.setCount == 70)
        #expect(map.members.last == 69)
    }

    @Test func blocksRoundTripThroughTheirEncoding() {
        var map = ExtentMap(count: ExtentMap.extentsPerBlock * 2 + 10)
        map.insert(3)
        map.insert(ExtentMap.extentsPerBlock + 7)
        map.insert(ExtentMap.extentsPerBlock * 2 + 9)
        var copy = ExtentMap(count: map.count)
        for block in 0..<map.blockCount {
            let encoded = ExtentMap.encode(map.blockWords(block))
            #expect(encoded != nil)
            copy.setBlockWords(block, ExtentMap.decode(encoded!)!)
        }
        #expect(copy == map)
        #expect(ExtentMap.encode(ExtentMap(count: 64).blockWords(0)) == nil, "an all-zero block is no row")
        #expect(ExtentMap.decode([1, 2, 3]) == nil, "a torn block is refused")
    }
}
