/// Reference counts and free space of one slot file.
///
/// Derived state: rebuilt at open from the durable mappings (every version holds one reference on its
/// slot), never stored. A slot whose count drops to zero is *pending*: it becomes reusable only after
/// the commit that recorded the drop is durable (see `Pool+Commit`).
struct SlotAllocator {
    let fileID: UInt16
    let chunkSize: UInt32
    /// Reference count per slot index below `highWater`.
    private(set) var refcounts: [UInt32] = []
    /// Bit set: slot is free and may be handed out now.
    private var reusable: [UInt64] = []
    private(set) var reusableCount = 0
    /// Lowest word of `reusable` that may have a set bit (a search hint, never too high).
    private var searchHint = 0

    init(fileID: UInt16, chunkSize: UInt32) {
        self.fileID = fileID
        self.chunkSize = chunkSize
    }

    /// Slots `[0, highWater)` have been handed out at least once; the file holds no live data beyond.
    var highWater: UInt64 { UInt64(refcounts.count) }

    /// Slots with at least one reference.
    var referencedCount: Int { refcounts.count - reusableCount - pendingCount }
    private(set) var pendingCount = 0

    func refcount(_ index: UInt64) -> UInt32 { index < highWater ? refcounts[Int(index)] : 0 }

    /// Hands out the lowest reusable slot, or a new one past the high-water mark, with one reference.
    mutating func allocate() -> SlotAddress {
        if reusableCount > 0 {
            var word = searchHint
            while reusable[word] == 0 { word += 1 }
            let bit = reusable[word].trailingZeroBitCount
            reusable[word] &= ~(UInt64(1) << UInt64(bit))
            reusableCount -= 1
            searchHint = word
            let index = word * 64 + bit
            refcounts[index] = 1
            return SlotAddress(file: fileID, index: UInt64(index))
        }
        let index = refcounts.count
        refcounts.append(1)
        if reusable.count * 64 < refcounts.count { reusable.append(0) }
        return SlotAddress(file: fileID, index: UInt64(index))
    }

    /// Adds a reference (sharing: snapshot-visible versions are not extra references, dedup and
    /// loading are).
    mutating func retain(_ index: UInt64) {
        if index >= highWater { grow(to: index + 1) }
        precondition(refcounts[Int(index)] < UInt32.max)
        refcounts[Int(index)] += 1
    }

    /// Drops a reference; returns true when the slot is now unreferenced (the caller queues it as
    /// pending until the next commit is durable).
    mutating func release(_ index: UInt64) -> Bool {
        precondition(index < highWater && refcounts[Int(index)] > 0, "release of an unreferenced slot \(index)")
        refcounts[Int(index)] -= 1
        if refcounts[Int(index)] == 0 {
            pendingCount += 1
            return true
        }
        return false
    }

    /// A pending slot whose release is durable may now be reused.
    mutating func makeReusable(_ index: UInt64) {
        precondition(refcounts[Int(index)] == 0)
        pendingCount -= 1
        markReusable(index)
    }

    /// Takes a specific reusable slot out of circulation (pool check punches it meanwhile); give it back
    /// with `abandon`. Returns false when the slot is not reusable.
    mutating func claimIfReusable(_ index: UInt64) -> Bool {
        let word = Int(index / 64)
        let bit = UInt64(1) << (index % 64)
        guard index < highWater, reusable[word] & bit != 0 else { return false }
        reusable[word] &= ~bit
        reusableCount -= 1
        refcounts[Int(index)] = 1
        return true
    }

    /// A slot that was allocated but never installed (its write failed) goes straight back: no
    /// metadata ever referred to it.
    mutating func abandon(_ index: UInt64) {
        precondition(refcounts[Int(index)] == 1)
        refcounts[Int(index)] = 0
        markReusable(index)
    }

    private mutating func markReusable(_ index: UInt64) {
        let word = Int(index / 64)
        reusable[word] |= UInt64(1) << (index % 64)
        reusableCount += 1
        searchHint = min(searchHint, word)
    }

    private mutating func grow(to count: UInt64) {
        refcounts.append(contentsOf: repeatElement(0, count: Int(count) - refcounts.count))
        let words = (refcounts.count + 63) / 64
        if reusable.count < words { reusable.append(contentsOf: repeatElement(0, count: words - reusable.count)) }
    }

    /// After loading: every slot below the high-water mark that nothing references is reusable.
    mutating func finishLoading() {
        for index in 0..<refcounts.count where refcounts[index] == 0 {
            markReusable(UInt64(index))
        }
        searchHint = 0
    }

    /// Indexes of reusable slots (for leak scans).
    func reusableIndexes() -> [UInt64] {
        var result: [UInt64] = []
        for (word, bits) in reusable.enumerated() where bits != 0 {
            bits.forEachRun { first, count in
                for bit in first..<(first + count) { result.append(UInt64(word * 64 + bit)) }
            }
        }
        return result
    }
}
