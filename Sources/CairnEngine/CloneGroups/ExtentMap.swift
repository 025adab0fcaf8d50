/// One bit per extent of a volume. Clone groups use it for the **delta map** (extents in which a clone and
/// its source differ) and for the **protected restore map** (extents the host wrote during a protected
/// restore). Extents are numbered from 0 at the start of the volume; the last may be short.
///
/// Persisted in blocks of `wordsPerBlock` words (one SQLite row each), so a commit rewrites only the
/// blocks that changed, never the whole map.
public struct ExtentMap: Hashable, Sendable {
    /// 512 words = 4 KiB per row = 32768 extents (2 GiB of volume at the default 64 KiB extents): small
    /// enough that a commit touching one region writes little; a 64 TiB volume has ~32k rows.
    public static let wordsPerBlock = 512
    public static let extentsPerBlock = UInt64(wordsPerBlock * 64)

    /// Number of extents.
    public let count: UInt64
    private(set) var words: [UInt64]

    public init(count: UInt64, filled: Bool = false) {
        self.count = count
        words = [UInt64](repeating: filled ? ~0 : 0, count: Int((count + 63) / 64))
        if filled { trimTail() }
    }

    public func contains(_ extent: UInt64) -> Bool {
        guard extent < count else { return false }
        return words[Int(extent / 64)] & (1 << (extent % 64)) != 0
    }

    /// Sets a bit; returns true when it was clear.
    @discardableResult
    public mutating func insert(_ extent: UInt64) -> Bool {
        precondition(extent < count, "extent \(extent) outside a map of \(count)")
        let bit: UInt64 = 1 << (extent % 64)
        let index = Int(extent / 64)
        guard words[index] & bit == 0 else { return false }
        words[index] |= bit
        return true
    }

    /// Clears a bit; returns true when it was set.
    @discardableResult
    public mutating func remove(_ extent: UInt64) -> Bool {
        guard extent < count else { return false }
        let bit: UInt64 = 1 << (extent % 64)
        let index = Int(extent / 64)
        guard words[index] & bit != 0 else { return false }
        words[index] &= ~bit
        return true
    }

    public var isEmpty: Bool { words.allSatisfy { $0 == 0 } }

    /// Number of set bits.
    public var setCount: UInt64 { words.reduce(0) { $0 + UInt64($1.nonzeroBitCount) } }

    /// The first set extent at or after `extent`.
    public func next(atOrAfter extent: UInt64) -> UInt64? {
        guard extent < count else { return nil }
        var index = Int(extent / 64)
        var word = words[index] & (~0 << (extent % 64))
        while true {
            if word != 0 { return UInt64(index) * 64 + UInt64(word.trailingZeroBitCount) }
            index += 1
            guard index < words.count else { return nil }
            word = words[index]
        }
    }

    /// Every set extent, ascending (tests, status).
    public var members: [UInt64] {
        var result: [UInt64] = []
        var cursor: UInt64 = 0
        while let next = next(atOrAfter: cursor) {
            result.append(next)
            cursor = next + 1
        }
        return result
    }

    public mutating func formUnion(_ other: ExtentMap) {
        precondition(other.count == count, "maps of different sizes")
        for index in words.indices { words[index] |= other.words[index] }
    }

    // MARK: - Persistence blocks

    public var blockCount: Int { (words.count + Self.wordsPerBlock - 1) / Self.wordsPerBlock }

    static func block(of extent: UInt64) -> Int { Int(extent / extentsPerBlock) }

    func wordRange(ofBlock block: Int) -> Range<Int> {
        let start = block * Self.wordsPerBlock
        return start..<min(start + Self.wordsPerBlock, words.count)
    }

    /// The words of one block.
    func blockWords(_ block: Int) -> [UInt64] { Array(words[wordRange(ofBlock: block)]) }

    mutating func setBlockWords(_ block: Int, _ values: [UInt64]) {
        let range = wordRange(ofBlock: block)
        for (offset, index) in range.enumerated() { words[index] = offset < values.count ? values[offset] : 0 }
        trimTail()
    }

    /// A block as stored: little-endian words; nil when all zero (the row is deleted).
    static func encode(_ values: [UInt64]) -> [UInt8]? {
        guard values.contains(where: { $0 != 0 }) else { return nil }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(values.count * 8)
        for value in values { withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) } }
        return bytes
    }

    static func decode(_ bytes: [UInt8]) -> [UInt64]? {
        guard bytes.count % 8 == 0, bytes.count <= wordsPerBlock * 8 else { return nil }
        return stride(from: 0, to: bytes.count, by: 8).map { start in
            var value: UInt64 = 0
            for index in 0..<8 { value |= UInt64(bytes[start + index]) << (8 * UInt64(index)) }
            return value
        }
    }

    /// Clears bits past `count` in the last word (a filled map, a block from disk).
    private mutating func trimTail() {
        guard count % 64 != 0, !words.isEmpty else { return }
        words[words.count - 1] &= (1 << (count % 64)) - 1
    }
}
