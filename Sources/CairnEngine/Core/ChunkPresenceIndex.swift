/// The set of chunk indexes that have a mapping, as a two-level bitmap: ordered iteration without
/// walking every chunk of a mostly empty volume (block status, large TRIMs, shrink checks).
struct ChunkPresenceIndex {
    /// Chunks per page: 4096 bits = 512 bytes per page of bits.
    private static let pageChunks: UInt64 = 4096
    private static let wordsPerPage = Int(pageChunks / 64)

    private var pages: [UInt64: [UInt64]] = [:]
    /// Page numbers in ascending order (pages change rarely compared with bits).
    private var pageOrder: [UInt64] = []
    private(set) var count = 0

    func contains(_ chunk: UInt64) -> Bool {
        guard let page = pages[chunk / Self.pageChunks] else { return false }
        let bit = chunk % Self.pageChunks
        return page[Int(bit / 64)] & (1 << (bit % 64)) != 0
    }

    mutating func insert(_ chunk: UInt64) {
        let key = chunk / Self.pageChunks
        let bit = chunk % Self.pageChunks
        let mask: UInt64 = 1 << (bit % 64)
        if pages[key] == nil {
            pages[key] = Array(repeating: 0, count: Self.wordsPerPage)
            pageOrder.insert(key, at: lowerBound(key))
        }
        if pages[key]![Int(bit / 64)] & mask == 0 {
            pages[key]![Int(bit / 64)] |= mask
            count += 1
        }
    }

    mutating func remove(_ chunk: UInt64) {
        let key = chunk / Self.pageChunks
        guard pages[key] != nil else { return }
        let bit = chunk % Self.pageChunks
        let mask: UInt64 = 1 << (bit % 64)
        guard pages[key]![Int(bit / 64)] & mask != 0 else { return }
        pages[key]![Int(bit / 64)] &= ~mask
        count -= 1
        if pages[key]!.allSatisfy({ $0 == 0 }) {
            pages[key] = nil
            pageOrder.remove(at: lowerBound(key))
        }
    }

    /// The smallest present chunk `>= chunk`, or nil.
    func next(atOrAfter chunk: UInt64) -> UInt64? {
        var position = lowerBound(chunk / Self.pageChunks)
        var first = chunk
        while position < pageOrder.count {
            let key = pageOrder[position]
            let page = pages[key]!
            let base = key * Self.pageChunks
            let startBit = first > base ? first - base : 0
            var word = Int(startBit / 64)
            var bits = page[word] & (~0 << (startBit % 64))
            while true {
                if bits != 0 { return base + UInt64(word * 64 + bits.trailingZeroBitCount) }
                word += 1
                if word == Self.wordsPerPage { break }
                bits = page[word]
            }
            position += 1
            first = 0
        }
        return nil
    }

    /// All present chunks in `[from, to)`, ascending.
    func chunks(in range: Range<UInt64>) -> [UInt64] {
        var result: [UInt64] = []
        var cursor = range.lowerBound
        while let chunk = next(atOrAfter: cursor), chunk < range.upperBound {
            result.append(chunk)
            cursor = chunk + 1
        }
        return result
    }

    private func lowerBound(_ key: UInt64) -> Int {
        var low = 0
        var high = pageOrder.count
        while low < high {
            let mid = (low + high) / 2
            if pageOrder[mid] < key { low = mid + 1 } else { high = mid }
        }
        return low
    }
}
