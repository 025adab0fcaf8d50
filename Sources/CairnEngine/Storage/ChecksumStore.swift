import CMirrorCRC
import CairnIO
import Synchronization

/// Layout of a slot file's checksum file (`slots-<chunk size>.crc`, beside `slots-<chunk size>.dat`):
/// a write-intent bitmap, then one CRC-32C per 4 KiB block of slot data at an offset computed from the
/// block's position. See docs/ARCHITECTURE.md, "Data checksums".
public enum ChecksumLayout {
    /// Slot data bytes covered by one checksum: a page, the smallest sub-block and the unit a torn
    /// write can leave half-old on a 4Kn disk.
    public static let blockSize: UInt64 = 4096
    /// Slot data bytes covered by one write-intent bit. md's and dm-integrity's bitmaps use 64 MiB-class
    /// regions too: large enough that marking (one write + sync) is rare, small enough that recomputing
    /// a region after a crash reads little.
    public static let intentRegionSize: UInt64 = 64 << 20
    /// Bytes of the bitmap at the start of the file: 524,288 regions, i.e. 32 PiB of slot data.
    public static let intentAreaSize: UInt64 = 64 << 10
    /// Bytes of the checksum file read and written as one cache page: 1,024 checksums (4 MiB of data),
    /// always inside one intent region.
    public static let pageSize: UInt64 = 4096
    static let entriesPerPage = Int(pageSize / 4)
    /// A stored 0 means "no checksum": never-written blocks and pools created before checksums existed.
    /// A block whose CRC really is 0 goes unverified (one in 2^32).
    public static let unknown: UInt32 = 0

    /// Offset in the checksum file of block `block`'s checksum.
    static func entryOffset(_ block: UInt64) -> UInt64 { intentAreaSize + block * 4 }

    /// The checksum file of a slot file: `slots-65536.dat` → `slots-65536.crc`.
    public static func checksumFileName(forSlotFile name: String) -> String {
        (name.hasSuffix(".dat") ? String(name.dropLast(4)) : name) + ".crc"
    }

    /// The CRC-32C of one block as stored (0, "unknown", never comes out of a real block by choice).
    @inline(__always)
    static func checksum(_ bytes: UnsafeRawBufferPointer) -> UInt32 {
        guard let base = bytes.baseAddress else { return 0 }
        return mirror_crc32c(0, base, bytes.count)
    }

    /// The checksum of a block of zeros (WRITE_ZEROES, zero-filled edges).
    static let zeroBlock: UInt32 = {
        let zeros = [UInt8](repeating: 0, count: Int(blockSize))
        return zeros.withUnsafeBytes { checksum($0) }
    }()
}

/// The checksums of one slot file: the checksum file behind a bounded page cache, plus the write-intent
/// bitmap (ChecksumStore+Intent.swift). Dirty pages are written out by the group commit (or when evicted)
/// and synced with the data, before the metadata that points at the data is committed.
///
/// Thread safety: every method may be called from any thread.
final class ChecksumStore: @unchecked Sendable {
    // @unchecked: `cache` is a Mutex; `intent` state is only touched under `intentMonitor`.
    /// Cache pages kept per slot file: 32 MiB of memory, the checksums of 32 GiB of slot data. A page
    /// costs a 4 KiB read on a miss; a random read over more than that touches the disk twice.
    static let maximumCachedPages = 8192

    let file: any StorageFile
    let cacheLimit: Int

    private final class Page {
        var entries: [UInt32]
        var dirty = false
        var lastUse: UInt64 = 0
        init(entries: [UInt32]) { self.entries = entries }
    }

    private struct Cache {
        var pages: [UInt64: Page] = [:]
        /// Indexes of the dirty pages (so a commit need not walk the whole cache).
        var dirty: Set<UInt64> = []
        var clock: UInt64 = 0
    }

    private let cache = Mutex(Cache())

    // Write intent: see ChecksumStore+Intent.swift.
    let intentMonitor = Monitor()
    /// Serializes the writes of the bitmap itself (a mark is written and synced before its bit is set in
    /// `intent.bitmap`; two marks sharing a byte must not overwrite each other).
    let intentWriteSerial = Monitor()
    var intent = IntentState()

    init(file: any StorageFile, cacheLimit: Int = ChecksumStore.maximumCachedPages) throws {
        self.file = file
        self.cacheLimit = max(2, cacheLimit)
        try loadIntent()
    }

    /// The stored checksums of blocks `first ..< first + count` (0: none stored).
    func checksums(from first: UInt64, count: Int) throws -> [UInt32] {
        try cache.withLock { cache in
            var out = [UInt32](repeating: 0, count: count)
            var index = 0
            while index < count {
                let block = first + UInt64(index)
                let page = try loadPage(Self.pageIndex(block), in: &cache)
                let start = Int(block % UInt64(ChecksumLayout.entriesPerPage))
                let run = min(count - index, ChecksumLayout.entriesPerPage - start)
                for i in 0..<run { out[index + i] = page.entries[start + i] }
                index += run
            }
            return out
        }
    }

    /// The same if every page needed is cached; nil otherwise (never blocks on the disk).
    func checksumsIfCached(from first: UInt64, count: Int) -> [UInt32]? {
        cache.withLock { cache -> [UInt32]? in
            var out = [UInt32](repeating: 0, count: count)
            for i in 0..<count {
                let block = first + UInt64(i)
                guard let page = cache.pages[Self.pageIndex(block)] else { return nil }
                out[i] = page.entries[Int(block % UInt64(ChecksumLayout.entriesPerPage))]
            }
            return out
        }
    }

    /// True when the pages holding blocks `first ..< first + count` are in the cache, so a `store` to them
    /// now reads nothing (another thread's load may still evict one before the store: then it reads one
    /// page, which the page cache almost surely holds).
    func isCached(from first: UInt64, count: Int) -> Bool {
        let firstPage = Self.pageIndex(first)
        let lastPage = Self.pageIndex(first + UInt64(max(count, 1)) - 1)
        return cache.withLock { cache in
            var page = firstPage
            while page <= lastPage {
                guard cache.pages[page] != nil else { return false }
                page += 1
            }
            return true
        }
    }

    /// Stores the checksums of blocks `first ..< first + values.count`. The caller holds a write intent on
    /// their region (`beginWrite`): the page may reach the disk any time from now on.
    func store(from first: UInt64, _ values: [UInt32]) throws {
        try values.withUnsafeBufferPointer { try store(from: first, $0) }
    }

    /// `store` from a caller's buffer (the immediate write path keeps its checksums on the stack).
    func store(from first: UInt64, _ values: UnsafeBufferPointer<UInt32>) throws {
        try cache.withLock { cache in
            for (i, value) in values.enumerated() {
                let block = first + UInt64(i)
                let page = try loadPage(Self.pageIndex(block), in: &cache)
                let entry = Int(block % UInt64(ChecksumLayout.entriesPerPage))
                // A page is written only when a value changed (unknown past the file's end stays unwritten).
                guard page.entries[entry] != value else { continue }
                page.entries[entry] = value
                if !page.dirty {
                    page.dirty = true
                    cache.dirty.insert(Self.pageIndex(block))
                }
            }
        }
    }

    /// Writes every dirty page (not synced). Called by the group commit before `sync()`. Under the cache
    /// lock, so a page cannot be evicted and read back stale while its newer copy is on its way out.
    func writeDirtyPages() throws {
        try cache.withLock { cache in
            for index in cache.dirty.sorted() {
                if let page = cache.pages[index], page.dirty { try write(page, index: index) }
                cache.dirty.remove(index)
            }
        }
    }

    func sync() throws { try file.sync() }

    /// Blocks below this may have a checksum other than unknown (on the disk or in the cache); every
    /// block from here on reads as unknown.
    func blocksWithEntries() throws -> UInt64 {
        let size = try file.size()
        let onDisk = size > ChecksumLayout.intentAreaSize ? (size - ChecksumLayout.intentAreaSize + 3) / 4 : 0
        let cached = cache.withLock { cache in
            cache.pages.keys.max().map { ($0 + 1) * UInt64(ChecksumLayout.entriesPerPage) } ?? 0
        }
        return max(onDisk, cached)
    }

    static func pageIndex(_ block: UInt64) -> UInt64 { block / UInt64(ChecksumLayout.entriesPerPage) }

    private func loadPage(_ index: UInt64, in cache: inout Cache) throws -> Page {
        cache.clock &+= 1
        if let page = cache.pages[index] {
            page.lastUse = cache.clock
            return page
        }
        if cache.pages.count >= cacheLimit { try evict(&cache) }
        var entries = [UInt32](repeating: 0, count: ChecksumLayout.entriesPerPage)
        try entries.withUnsafeMutableBytes {
            try file.read(into: $0, at: ChecksumLayout.entryOffset(index * UInt64(ChecksumLayout.entriesPerPage)))
        }
        for i in entries.indices { entries[i] = UInt32(littleEndian: entries[i]) }
        let page = Page(entries: entries)
        page.lastUse = cache.clock
        cache.pages[index] = page
        return page
    }

    /// Drops the least recently used eighth of the pages, writing the dirty ones first (their region is
    /// marked, so an unsynced page on the disk is recomputed after a crash).
    private func evict(_ cache: inout Cache) throws {
        let victims = cache.pages.sorted { $0.value.lastUse < $1.value.lastUse }.prefix(max(1, cacheLimit / 8))
        for (index, page) in victims {
            if page.dirty { try write(page, index: index) }
            cache.pages[index] = nil
            cache.dirty.remove(index)
        }
    }

    private func write(_ page: Page, index: UInt64) throws {
        let bytes = page.entries.map(\.littleEndian)
        try bytes.withUnsafeBytes {
            try file.write($0, at: ChecksumLayout.entryOffset(index * UInt64(ChecksumLayout.entriesPerPage)))
        }
        page.dirty = false
    }
}
