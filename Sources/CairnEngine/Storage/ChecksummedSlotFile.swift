import CairnIO
import Glibc
import Synchronization

/// A block of slot data whose bytes do not match the checksum stored for them: silent corruption on
/// the disk (or a bug). Never served as data: the read fails instead.
public struct ChecksumMismatch: Error, Sendable, CustomStringConvertible {
    /// The slot file.
    public var path: String
    /// Offset in the slot file of the damaged 4 KiB block.
    public var fileOffset: UInt64
    public var stored: UInt32
    public var computed: UInt32

    public var description: String {
        "data checksum mismatch in \(path) at offset \(fileOffset) (stored \(hex(stored)), data \(hex(computed)))"
    }

    private func hex(_ value: UInt32) -> String { "0x" + String(value, radix: 16) }
}

/// Counts checksum mismatches found by any read of any slot file of a pool (`pool status`, `/metrics`).
public final class ChecksumCounters: Sendable {
    public let mismatches = Atomic<UInt64>(0)
    public init() {}
}

/// A slot file that keeps a CRC-32C per 4 KiB block in a `ChecksumStore` and verifies every read.
///
/// Every change of slot data in the engine goes through a `StorageFile`, so wrapping the slot files is
/// what covers every path (host writes, copy-on-write fills, copy-out, clone copies, dedup repair) and
/// every read (NBD, mirror resync, backup, dedup, scrub) without each having to remember it.
///
/// Writes hold a lock on their blocks (`stripes`) across the data write and the checksum update, so two
/// overlapping writes cannot leave one's data with the other's checksum. Reads take no lock: a read that
/// races a write may see new data with an old checksum, so a mismatch is checked again under the lock
/// before it counts, and the bytes then returned are the ones that verified.
final class ChecksummedSlotFile: StorageFile {
    let base: any StorageFile
    let checksums: ChecksumStore
    private let counters: ChecksumCounters
    private let stripes = BlockStripes()
    /// Turns an I/O error of the checksum file into the pool's fail-stop error (a durability-path error).
    private let sidecarFailed: @Sendable (any Error) -> any Error

    init(
        _ base: any StorageFile, checksums: ChecksumStore, counters: ChecksumCounters,
        sidecarFailed: @escaping @Sendable (any Error) -> any Error
    ) {
        self.base = base
        self.checksums = checksums
        self.counters = counters
        self.sidecarFailed = sidecarFailed
    }

    var path: String { base.path }
    var writeMode: StorageWriteMode { base.writeMode }
    private static let block = ChecksumLayout.blockSize

    // MARK: Reads

    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {
        try base.read(into: buffer, at: offset)
        guard !buffer.isEmpty else { return }
        let first = offset / Self.block
        let count = Int((offset + UInt64(buffer.count) - 1) / Self.block - first + 1)
        let stored = try sidecar { try checksums.checksums(from: first, count: count) }
        for i in 0..<count where stored[i] != ChecksumLayout.unknown {
            let block = first + UInt64(i)
            if let computed = try checksum(of: block, in: buffer, at: offset, mayBlock: true), computed == stored[i] {
                continue
            }
            try verifyUnderLock(block, into: buffer, at: offset)
        }
    }

    func readIfCached(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws -> Bool {
        guard try base.readIfCached(into: buffer, at: offset) else { return false }
        guard !buffer.isEmpty else { return true }
        let first = offset / Self.block
        let count = Int((offset + UInt64(buffer.count) - 1) / Self.block - first + 1)
        guard let stored = checksums.checksumsIfCached(from: first, count: count) else { return false }
        for i in 0..<count where stored[i] != ChecksumLayout.unknown {
            // A mismatch here may be a race with a write: the blocking path decides.
            guard let computed = try checksum(of: first + UInt64(i), in: buffer, at: offset, mayBlock: false),
                computed == stored[i]
            else { return false }
        }
        return true
    }

    /// The checksum of `block`, from `buffer` when it holds the whole block, else read whole from the
    /// file (nil when `mayBlock` is false and it is not cached).
    private func checksum(of block: UInt64, in buffer: UnsafeMutableRawBufferPointer, at offset: UInt64,
        mayBlock: Bool) throws -> UInt32?
    {
        let start = block * Self.block
        if start >= offset && start + Self.block <= offset + UInt64(buffer.count) {
            let from = Int(start - offset)
            return ChecksumLayout.checksum(UnsafeRawBufferPointer(rebasing: buffer[from..<(from + Int(Self.block))]))
        }
        let whole = UnsafeMutableRawBufferPointer.allocate(byteCount: Int(Self.block), alignment: 4096)
        defer { whole.deallocate() }
        if mayBlock {
            try base.read(into: whole, at: start)
        } else if try !base.readIfCached(into: whole, at: start) {
            return nil
        }
        return ChecksumLayout.checksum(UnsafeRawBufferPointer(whole))
    }

    /// Reads `block` again with writes to it excluded; copies the verified bytes into the caller's buffer,
    /// or counts and throws the mismatch.
    private func verifyUnderLock(_ block: UInt64, into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64)
        throws
    {
        let start = block * Self.block
        try stripes.withLocks(at: start, length: Self.block) {
            let whole = UnsafeMutableRawBufferPointer.allocate(byteCount: Int(Self.block), alignment: 4096)
            defer { whole.deallocate() }
            try base.read(into: whole, at: start)
            let stored = try sidecar { try checksums.checksums(from: block, count: 1)[0] }
            let computed = ChecksumLayout.checksum(UnsafeRawBufferPointer(whole))
            guard stored == ChecksumLayout.unknown || stored == computed else {
                counters.mismatches.add(1, ordering: .relaxed)
                throw ChecksumMismatch(path: base.path, fileOffset: start, stored: stored, computed: computed)
            }
            let from = max(start, offset)
            let to = min(start + Self.block, offset + UInt64(buffer.count))
            UnsafeMutableRawBufferPointer(rebasing: buffer[Int(from - offset)..<Int(to - offset)])
                .copyMemory(from: UnsafeRawBufferPointer(rebasing: whole[Int(from - start)..<Int(to - start)]))
        }
    }

    /// Verifies the blocks of `[offset, offset + length)` against their checksums (scrub): the offsets of
    /// the damaged blocks, and how many blocks have no checksum to verify.
    func damagedBlocks(at offset: UInt64, length: Int) throws -> (damaged: [UInt64], unchecked: Int) {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: length, alignment: 4096)
        defer { buffer.deallocate() }
        var damaged: [UInt64] = []
        try base.read(into: buffer, at: offset)
        let first = offset / Self.block
        let count = Int((offset + UInt64(length) - 1) / Self.block - first + 1)
        let stored = try sidecar { try checksums.checksums(from: first, count: count) }
        var unchecked = 0
        for i in 0..<count {
            guard stored[i] != ChecksumLayout.unknown else {
                unchecked += 1
                continue
            }
            let block = first + UInt64(i)
            if let computed = try checksum(of: block, in: buffer, at: offset, mayBlock: true), computed == stored[i] {
                continue
            }
            do {
                try verifyUnderLock(block, into: buffer, at: offset)
            } catch let mismatch as ChecksumMismatch {
                damaged.append(mismatch.fileOffset)
            }
        }
        return (damaged, unchecked)
    }

    // MARK: Changes

    func write(_ buffer: UnsafeRawBufferPointer, at offset: UInt64) throws {
        try change(at: offset, length: UInt64(buffer.count), content: .bytes(buffer)) {
            try base.write(buffer, at: offset)
        }
    }

    /// Whole blocks only (a partial block must be read to checksum it), under a region already marked
    /// in the intent area, block locks that are free and checksum pages in the cache; false otherwise.
    func writeIfImmediate(_ buffer: UnsafeRawBufferPointer, at offset: UInt64) throws -> Bool {
        let length = UInt64(buffer.count)
        guard length > 0, offset % Self.block == 0, length % Self.block == 0 else { return false }
        let regions = ChecksumStore.regions(at: offset, length: length)
        guard checksums.beginWriteIfMarked(regions) else { return false }
        defer { checksums.endWrite(regions) }
        let first = offset / Self.block
        let count = Int(length / Self.block)
        let written = try stripes.withLocksIfFree(at: offset, length: length) { () -> Bool in
            guard checksums.isCached(from: first, count: count) else { return false }
            // Whole blocks only, so every checksum comes from the caller's bytes; on the stack, because this
            // runs for every hot overwrite on an event loop.
            return try withUnsafeTemporaryAllocation(of: UInt32.self, capacity: count) { values in
                for i in 0..<count {
                    let from = i * Int(Self.block)
                    values[i] = ChecksumLayout.checksum(UnsafeRawBufferPointer(rebasing: buffer[from..<(from + Int(Self.block))]))
                }
                do {
                    guard try base.writeIfImmediate(buffer, at: offset) else { return false }
                } catch {
                    values.update(repeating: ChecksumLayout.unknown)
                    try sidecar { try checksums.store(from: first, UnsafeBufferPointer(values)) }
                    throw error
                }
                try sidecar { try checksums.store(from: first, UnsafeBufferPointer(values)) }
                return true
            }
        }
        return written ?? false
    }

    func writeDurably(_ buffer: UnsafeRawBufferPointer, at offset: UInt64) throws {
        try change(at: offset, length: UInt64(buffer.count), content: .bytes(buffer)) {
            try base.writeDurably(buffer, at: offset)
        }
    }

    func zeroRange(at offset: UInt64, length: UInt64) throws {
        try change(at: offset, length: length, content: .zeros(length: length)) {
            try base.zeroRange(at: offset, length: length)
        }
    }

    /// A punched range holds no data anyone reads (a freed slot): its checksums become unknown, so a
    /// later partial write there does not trip over zeros that no longer match.
    func punchHole(at offset: UInt64, length: UInt64) throws {
        try change(at: offset, length: length, content: nil) { try base.punchHole(at: offset, length: length) }
    }

    /// A copy carries the source's checksums with the data (block-aligned copies, which is every copy the
    /// engine makes): damaged data copied stays detectably damaged, and nothing is read to copy.
    @discardableResult
    func copy(from source: any StorageFile, at sourceOffset: UInt64, to offset: UInt64, length: UInt64) throws
        -> CopyMethod
    {
        let checkedSource = source as? ChecksummedSlotFile
        let inner = checkedSource?.base ?? source
        let aligned = sourceOffset % Self.block == 0 && offset % Self.block == 0 && length % Self.block == 0
        guard aligned, length > 0 else {
            var method = CopyMethod.userspace
            try change(at: offset, length: length, content: nil) {
                method = try base.copy(from: inner, at: sourceOffset, to: offset, length: length)
            }
            return method
        }
        let count = Int(length / Self.block)
        let carried = try checkedSource.map { source in
            try sidecar { try source.checksums.checksums(from: sourceOffset / Self.block, count: count) }
        } ?? [UInt32](repeating: ChecksumLayout.unknown, count: count)
        var method = CopyMethod.userspace
        try change(at: offset, length: length, content: .carried(carried)) {
            method = try base.copy(from: inner, at: sourceOffset, to: offset, length: length)
        }
        return method
    }

    /// Cutting the file changes every block past the cut: each reads as zeros (or not at all) from now on,
    /// and a slot there comes back later as a fresh slot. So their checksums go with them: a stale one
    /// would fail the first read of that block, or a partial write into it, although nothing is damaged.
    /// This is a change like any other, under a write intent on the regions whose checksums it clears, so a
    /// crash before the next checksum sync recomputes them from whatever the disk kept. A cut inside a
    /// block keeps that block's head: it is verified first, and its checksum becomes that of head + zeros.
    func truncate(to length: UInt64) throws {
        let end = try max(base.size(), sidecar { try checksums.blocksWithEntries() } * Self.block)
        guard end > length else { return try base.truncate(to: length) }
        let first = length / Self.block
        let head = Int(length % Self.block)
        let firstWhole = head == 0 ? first : first + 1
        let endBlock = (end + Self.block - 1) / Self.block
        // Only the regions that hold a checksum past the cut need one cleared (and an intent mark).
        var regions: [UInt64] = head > 0 ? [length / ChecksumLayout.intentRegionSize] : []
        let blocksPerRegion = ChecksumLayout.intentRegionSize / Self.block
        var block = firstWhole
        while block < endBlock {
            let regionEnd = min(endBlock, (block / blocksPerRegion + 1) * blocksPerRegion)
            let stored = try sidecar { try checksums.checksums(from: block, count: Int(regionEnd - block)) }
            let region = block / blocksPerRegion
            if stored.contains(where: { $0 != ChecksumLayout.unknown }) && regions.last != region {
                regions.append(region)
            }
            block = regionEnd
        }
        var entered: [UInt64] = []
        defer { for region in entered { checksums.endWrite(region...region) } }
        for region in regions {
            try sidecar { try checksums.beginWrite(region...region) }
            entered.append(region)
        }
        try stripes.withLocks(at: first * Self.block, length: (endBlock - first) * Self.block) {
            var headChecksum: UInt32?
            if head > 0 {
                let whole = UnsafeMutableRawBufferPointer.allocate(byteCount: Int(Self.block), alignment: 4096)
                defer { whole.deallocate() }
                try base.read(into: whole, at: first * Self.block)
                let stored = try sidecar { try checksums.checksums(from: first, count: 1)[0] }
                let computed = ChecksumLayout.checksum(UnsafeRawBufferPointer(whole))
                if stored != ChecksumLayout.unknown && stored != computed {
                    counters.mismatches.add(1, ordering: .relaxed)
                    throw ChecksumMismatch(path: base.path, fileOffset: first * Self.block, stored: stored, computed: computed)
                }
                UnsafeMutableRawBufferPointer(rebasing: whole[head...]).initializeMemory(as: UInt8.self, repeating: 0)
                headChecksum = ChecksumLayout.checksum(UnsafeRawBufferPointer(whole))
            }
            var failure: (any Error)?
            do { try base.truncate(to: length) } catch { failure = error }
            // After a failed cut the blocks may hold anything: unknown (the head block too) is always true.
            if head > 0 {
                try sidecar { try checksums.store(from: first, [failure == nil ? headChecksum! : ChecksumLayout.unknown]) }
            }
            for region in regions {
                let from = max(firstWhole, region * blocksPerRegion)
                let to = min(endBlock, (region + 1) * blocksPerRegion)
                guard to > from else { continue }
                try sidecar {
                    try checksums.store(from: from, [UInt32](repeating: ChecksumLayout.unknown, count: Int(to - from)))
                }
            }
            if let failure { throw failure }
        }
    }

    func sync() throws { try base.sync() }
    func preallocate(at offset: UInt64, length: UInt64) throws { try base.preallocate(at: offset, length: length) }
    func size() throws -> UInt64 { try base.size() }
    func allocatedBytes() throws -> UInt64 { try base.allocatedBytes() }
    func nextData(from offset: UInt64) throws -> UInt64? { try base.nextData(from: offset) }
    func prefetch(at offset: UInt64, length: UInt64) { base.prefetch(at: offset, length: length) }

    /// Runs a sidecar operation, turning its I/O error into the pool's fail-stop.
    func sidecar<T>(_ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch {
            throw sidecarFailed(error)
        }
    }

    /// What a change leaves in its blocks, for their new checksums.
    enum NewContent {
        case bytes(UnsafeRawBufferPointer)
        case zeros(length: UInt64)
        /// One checksum per block, carried from a copy's source.
        case carried([UInt32])
    }

    /// Runs `body` under the write intent and the block locks of `[offset, offset + length)`, then
    /// stores the blocks' checksums: computed from `content` (edge blocks completed with their current,
    /// verified bytes), or unknown when `content` is nil or `body` fails part-way.
    private func change(at offset: UInt64, length: UInt64, content: NewContent?, _ body: () throws -> Void) throws {
        guard length > 0 else { return try body() }
        let regions = ChecksumStore.regions(at: offset, length: length)
        try sidecar { try checksums.beginWrite(regions) }
        defer { checksums.endWrite(regions) }
        let first = offset / Self.block
        let count = Int((offset + length - 1) / Self.block - first + 1)
        try stripes.withLocks(at: offset, length: length) {
            let values = try content.map { try newChecksums($0, at: offset, length: length, first: first, count: count) }
            do {
                try body()
            } catch {
                try sidecar {
                    try checksums.store(from: first, [UInt32](repeating: ChecksumLayout.unknown, count: count))
                }
                throw error
            }
            let stored = values ?? [UInt32](repeating: ChecksumLayout.unknown, count: count)
            try sidecar { try checksums.store(from: first, stored) }
        }
    }

    /// Checksums of the blocks after the change (block locks held). A block only partly changed is read
    /// whole first and must verify: a partial write never launders damaged bytes into a good checksum.
    private func newChecksums(_ content: NewContent, at offset: UInt64, length: UInt64, first: UInt64, count: Int)
        throws -> [UInt32]
    {
        if case .carried(let values) = content { return values }
        var values = [UInt32](repeating: 0, count: count)
        let end = offset + length
        var scratch: UnsafeMutableRawBufferPointer?
        defer { scratch?.deallocate() }
        for i in 0..<count {
            let start = (first + UInt64(i)) * Self.block
            let from = max(start, offset)
            let to = min(start + Self.block, end)
            if from == start && to == start + Self.block {
                switch content {
                case .bytes(let buffer):
                    let at = Int(start - offset)
                    values[i] = ChecksumLayout.checksum(UnsafeRawBufferPointer(rebasing: buffer[at..<(at + Int(Self.block))]))
                case .zeros, .carried: values[i] = ChecksumLayout.zeroBlock
                }
                continue
            }
            let whole = scratch ?? UnsafeMutableRawBufferPointer.allocate(byteCount: Int(Self.block), alignment: 4096)
            scratch = whole
            try base.read(into: whole, at: start)
            let stored = try sidecar { try checksums.checksums(from: start / Self.block, count: 1)[0] }
            let computed = ChecksumLayout.checksum(UnsafeRawBufferPointer(whole))
            if stored != ChecksumLayout.unknown && stored != computed {
                counters.mismatches.add(1, ordering: .relaxed)
                throw ChecksumMismatch(path: base.path, fileOffset: start, stored: stored, computed: computed)
            }
            let part = UnsafeMutableRawBufferPointer(rebasing: whole[Int(from - start)..<Int(to - start)])
            switch content {
            case .bytes(let buffer):
                part.copyMemory(from: UnsafeRawBufferPointer(rebasing: buffer[Int(from - offset)..<Int(to - offset)]))
            case .zeros, .carried: part.initializeMemory(as: UInt8.self, repeating: 0)
            }
            values[i] = ChecksumLayout.checksum(UnsafeRawBufferPointer(whole))
        }
        return values
    }
}

/// Locks over slot file blocks (4 KiB, the checksum unit), striped over a fixed set of mutexes.
///
/// Per block rather than per chunk: a host writing sequentially at queue depth 32 has many writes in one
/// chunk at once, and with one lock per chunk each write that went to an I/O thread held the lock the
/// next write on the event loop needed, sending that one to the I/O threads too. A range locks its
/// stripes in ascending index order (a run that wraps past the last stripe locks the low run first), so
/// waiters cannot deadlock; the try-lock path waits for nothing.
final class BlockStripes: @unchecked Sendable {
    // @unchecked: the mutexes are only touched through pthread calls; their memory never moves.
    /// Mutexes shared by all blocks: 16 MiB of consecutive blocks before two share one.
    static let count = 4096
    static let granule: UInt64 = ChecksumLayout.blockSize
    private let mutexes: UnsafeMutablePointer<pthread_mutex_t>

    init() {
        mutexes = .allocate(capacity: Self.count)
        for index in 0..<Self.count { pthread_mutex_init(mutexes + index, nil) }
    }

    deinit {
        for index in 0..<Self.count { pthread_mutex_destroy(mutexes + index) }
        mutexes.deallocate()
    }

    /// The stripes of `[offset, offset + length)` as at most two ascending runs, lowest first.
    private static func runs(at offset: UInt64, length: UInt64) -> (Range<Int>, Range<Int>) {
        let first = offset / granule
        let last = (offset + max(length, 1) - 1) / granule
        guard last - first + 1 < UInt64(count) else { return (0..<count, 0..<0) }
        let low = Int(first % UInt64(count))
        let high = Int(last % UInt64(count))
        return low <= high ? (low..<(high + 1), 0..<0) : (0..<(high + 1), low..<count)
    }

    func withLocks<T>(at offset: UInt64, length: UInt64, _ body: () throws -> T) rethrows -> T {
        let (lower, upper) = Self.runs(at: offset, length: length)
        for index in lower { pthread_mutex_lock(mutexes + index) }
        for index in upper { pthread_mutex_lock(mutexes + index) }
        defer {
            unlock(upper)
            unlock(lower)
        }
        return try body()
    }

    /// `withLocks` if every stripe of the range is free right now; nil (nothing run) otherwise.
    func withLocksIfFree<T>(at offset: UInt64, length: UInt64, _ body: () throws -> T) rethrows -> T? {
        let (lower, upper) = Self.runs(at: offset, length: length)
        guard tryLock(lower) else { return nil }
        guard tryLock(upper) else {
            unlock(lower)
            return nil
        }
        defer {
            unlock(upper)
            unlock(lower)
        }
        return try body()
    }

    /// Locks every stripe of `run` if all are free; otherwise releases the ones it took and returns false.
    private func tryLock(_ run: Range<Int>) -> Bool {
        for index in run where pthread_mutex_trylock(mutexes + index) != 0 {
            unlock(run.lowerBound..<index)
            return false
        }
        return true
    }

    private func unlock(_ run: Range<Int>) {
        for index in run.reversed() { pthread_mutex_unlock(mutexes + index) }
    }
}
