import CairnIO
import Glibc
import Synchronization

/// The primary's **change map** (the changed-track table; DRBD's quick-sync bitmap and activity
/// log in one file): one bit per extent of the primary volume. A set bit means "the target may differ
/// here". It is *write-intent*: a host write's extents are durably set **before** its data is issued,
/// so a primary crash can never leave a changed extent the map does not know about.
///
/// Two kinds of bits, persisted as their union:
/// - **dirty**: the target certainly lacks this extent (written while fractured, an initial sync not
///   done yet, a write the target did not acknowledge). Cleared only by a resync that copied it.
/// - **active** (activity log): a mirrored write to the extent was in flight. Cleared by a checkpoint
///   once both sides flushed and the extent has been idle since the checkpoint began; a hot extent stays
///   set, so it costs one `fdatasync` when it first becomes hot, not one per write.
///
/// The target keeps one too (`mirrors/target-<volume id>.map`, same format) for the extents hosts write
/// there while it is severed or promoted: what `re-establish --take-target-changes` copies back.
///
/// File (`mirrors/primary-<volume id>.map`): a 4 KiB header page (`ChangeMapHeader`), then the bitmap as
/// little-endian UInt64 words, written in 4 KiB pages: a sync rewrites only the pages that changed.
public final class ChangeMap: Sendable {
    public let extentSize: UInt64
    /// Extents of the volume now (changes with `resize`).
    public var extentCount: UInt64 { state.withLock { $0.extentCount } }
    let file: any StorageFile
    let executor: IOExecutor

    /// Bitmap pages are 4 KiB: the unit a sync rewrites and (on every Linux filesystem here) the unit of an
    /// atomic page write.
    static let pageBytes = 4096
    static let wordsPerPage = pageBytes / 8
    /// "CAIRNCMP" little-endian: the header's magic.
    static let magic: UInt64 = 0x504D_434E_5249_4143
    static let formatVersion: UInt64 = 1

    struct State {
        var extentCount: UInt64
        var dirty: [UInt64]
        var active: [UInt64]
        /// Bits certainly set in the file: set by a completed sync, dropped as soon as a clear is decided
        /// (before the clear is written), so a write never relies on a bit a sync in progress may erase.
        var durable: [UInt64]
        /// The file's bitmap as the last completed sync wrote it (to rewrite only pages that changed).
        var onDisk: [UInt64]
        /// Mirrored writes in flight per extent.
        var inFlight: [UInt64: Int] = [:]
        /// Write sequence number of the last write that touched an extent (for checkpoints).
        var lastWrite: [UInt64: UInt64] = [:]
        var sequence: UInt64 = 0
        /// Value of `dirtyClock` when an extent was last set dirty: a resync clears a bit only if it was
        /// not set again after its copy started.
        var dirtiedAt: [UInt64: UInt64] = [:]
        var dirtyClock: UInt64 = 0
        var syncing = false
        var waiters: [CheckedContinuation<Void, any Error>] = []
        /// The first failed write or sync of the file. Final: after a failed fdatasync the kernel may
        /// have dropped the pages and reports it once, so rewriting them and syncing again could
        /// "succeed" over bits the disk never got. The owner fractures the mirror (or stops the pool).
        var failure: (any Error)?

        func persisted(_ index: Int) -> UInt64 { dirty[index] | active[index] }
    }

    let state: Mutex<State>
    /// Serializes `markDirtyDurably`'s page writes (its callers are I/O threads, not tasks).
    let blockingSync = Mutex<Void>(())

    init(file: any StorageFile, executor: IOExecutor, extentSize: UInt64, extentCount: UInt64, words: [UInt64]) {
        self.file = file
        self.executor = executor
        self.extentSize = extentSize
        // Whatever the file says changed is dirty: after a crash, an active bit is an extent that may differ.
        state = Mutex(
            State(
                extentCount: extentCount, dirty: words, active: [UInt64](repeating: 0, count: words.count),
                durable: words, onDisk: words))
    }

    static func wordCount(_ extents: UInt64) -> Int { Int((extents + 63) / 64) }

    /// Creates the file with every bit clear (or set, `filled`), durably, replacing any old one.
    public static func create(
        path: String, executor: IOExecutor, extentSize: UInt64, volumeSize: UInt64
    ) throws -> ChangeMap {
        unlink(path)
        let map = try create(
            file: try PosixStorageFile(path: path, create: true), executor: executor, extentSize: extentSize,
            volumeSize: volumeSize)
        try MirrorRecordStore.syncDirectory(of: path)
        return map
    }

    /// Creates an empty map in `file` (a simulated file in tests) and syncs it.
    public static func create(
        file: any StorageFile, executor: IOExecutor, extentSize: UInt64, volumeSize: UInt64
    ) throws -> ChangeMap {
        let count = (volumeSize + extentSize - 1) / extentSize
        var header = [UInt64](repeating: 0, count: wordsPerPage)
        header[0] = magic
        header[1] = formatVersion
        header[2] = extentSize
        header[3] = count
        try header.withUnsafeBytes { try file.write($0, at: 0) }
        let words = [UInt64](repeating: 0, count: wordCount(count))
        try file.truncate(to: UInt64(pageBytes + max(1, (words.count * 8 + pageBytes - 1) / pageBytes) * pageBytes))
        try file.sync()
        return ChangeMap(file: file, executor: executor, extentSize: extentSize, extentCount: count, words: words)
    }

    /// Opens an existing map (at start-up).
    public static func open(path: String, executor: IOExecutor) throws -> ChangeMap {
        try open(file: try PosixStorageFile(path: path), executor: executor)
    }

    /// Opens the map in `file` (a simulated file in tests).
    public static func open(file: any StorageFile, executor: IOExecutor) throws -> ChangeMap {
        let path = file.path
        var header = [UInt64](repeating: 0, count: 4)
        try header.withUnsafeMutableBytes { try file.read(into: $0, at: 0) }
        guard header[0] == magic, header[1] == formatVersion, header[2] > 0, header[2].nonzeroBitCount == 1 else {
            throw ReplicationError(.corrupt, "\(path) is not a Cairn change map (or a newer format)")
        }
        let count = header[3]
        var words = [UInt64](repeating: 0, count: wordCount(count))
        if !words.isEmpty { try words.withUnsafeMutableBytes { try file.read(into: $0, at: UInt64(pageBytes)) } }
        return ChangeMap(file: file, executor: executor, extentSize: header[2], extentCount: count, words: words)
    }

    /// Extents a byte range touches.
    public func extents(offset: UInt64, length: UInt64) -> ClosedRange<UInt64> {
        let extentCount = self.extentCount
        let first = min(offset / extentSize, extentCount - 1)
        let last = min((offset + max(length, 1) - 1) / extentSize, extentCount - 1)
        return first...last
    }

    /// Write-intent: records a write to `extents` (as active, and `dirty` if the target will not get
    /// it) and returns once the bits are durable. Call before the write's data is issued.
    public func beginWrite(_ extents: ClosedRange<UInt64>, dirty: Bool) async throws {
        let covered = state.withLock { s -> Bool in
            s.sequence += 1
            var covered = true
            for extent in extents {
                let (index, bit) = (Int(extent / 64), UInt64(1) << (extent % 64))
                s.active[index] |= bit
                s.inFlight[extent, default: 0] += 1
                s.lastWrite[extent] = s.sequence
                if dirty { Self.setDirty(&s, extent) }
                if s.durable[index] & bit == 0 { covered = false }
            }
            if !covered { Self.activateAhead(&s, after: extents) }
            return covered
        }
        if !covered { try await makeDurable() }
    }

    /// Extents a sequential writer's sync marks active ahead of it (32 MiB at the default extent size).
    /// Measured: a 1 MiB sequential stream (bench/mirror.py write-1m-qd8) otherwise waited for one map
    /// sync per write, every write starting a new extent. A bit set ahead and never written only costs the
    /// copy of that extent after a crash or link failure (an active bit is resynced then) and is cleared
    /// by the next checkpoint like any idle extent.
    static let sequentialLookahead: UInt64 = 32

    /// A write that needs a sync anyway and continues an active extent (a sequential stream) takes the
    /// next extents into the same sync.
    private static func activateAhead(_ s: inout State, after extents: ClosedRange<UInt64>) {
        let previous = extents.lowerBound
        guard previous > 0, s.active[Int((previous - 1) / 64)] & (UInt64(1) << ((previous - 1) % 64)) != 0 else { return }
        let end = min(extents.upperBound + 1 + sequentialLookahead, s.extentCount)
        guard extents.upperBound + 1 < end else { return }
        for extent in (extents.upperBound + 1)..<end {
            let (index, bit) = (Int(extent / 64), UInt64(1) << (extent % 64))
            guard s.active[index] & bit == 0 else { continue }
            s.active[index] |= bit
            // A write sequence number, so the checkpoint clears it if it stays idle.
            s.lastWrite[extent] = s.sequence
        }
    }

    /// Write-intent without waiting: records the write to `extents` (active, not dirty) only if every bit
    /// is already durable, and returns whether it did. On false nothing changed (the caller takes the
    /// waiting path, `beginWrite`).
    public func beginWriteIfDurable(_ extents: ClosedRange<UInt64>) -> Bool {
        state.withLock { s -> Bool in
            for extent in extents where s.durable[Int(extent / 64)] & (UInt64(1) << (extent % 64)) == 0 { return false }
            s.sequence += 1
            for extent in extents {
                s.active[Int(extent / 64)] |= UInt64(1) << (extent % 64)
                s.inFlight[extent, default: 0] += 1
                s.lastWrite[extent] = s.sequence
            }
            return true
        }
    }

    /// The write finished; `targetMissed`: the target did not acknowledge it, so the extents stay dirty
    /// (the bits are already durable: `beginWrite` made them so).
    public func endWrite(_ extents: ClosedRange<UInt64>, targetMissed: Bool) {
        state.withLock { s in
            for extent in extents {
                if let count = s.inFlight[extent], count > 1 { s.inFlight[extent] = count - 1 } else { s.inFlight[extent] = nil }
                if targetMissed { Self.setDirty(&s, extent) }
            }
        }
    }

    private static func setDirty(_ s: inout State, _ extent: UInt64) {
        s.dirty[Int(extent / 64)] |= UInt64(1) << (extent % 64)
        s.dirtyClock += 1
        s.dirtiedAt[extent] = s.dirtyClock
    }

    /// Marks extents dirty (in memory; durable at the next `makeDurable`).
    public func markDirty(_ extents: some Sequence<UInt64>) {
        state.withLock { s in for extent in extents where extent < s.extentCount { Self.setDirty(&s, extent) } }
    }

    /// Marks every extent dirty (a full resync).
    public func markAllDirty() { markDirty(0..<extentCount) }

    /// The volume was resized: extents past the new end go, new ones start clean (a grown volume reads
    /// zeros on both sides). Header and file length are rewritten durably. Blocking: on an I/O thread,
    /// with no write in flight (the caller holds the whole volume in the overlap gate).
    public func resize(volumeSize: UInt64) throws {
        let count = (volumeSize + extentSize - 1) / extentSize
        let words = Self.wordCount(count)
        state.withLock { s in
            s.extentCount = count
            for index in [\State.dirty, \State.active, \State.durable, \State.onDisk] {
                s[keyPath: index] = Self.fit(s[keyPath: index], to: words)
            }
            // Bits past the end of the last word's valid range.
            if count % 64 != 0, words > 0 {
                let mask = (UInt64(1) << (count % 64)) - 1
                s.dirty[words - 1] &= mask
                s.active[words - 1] &= mask
            }
            s.inFlight = s.inFlight.filter { $0.key < count }
            s.lastWrite = s.lastWrite.filter { $0.key < count }
            s.dirtiedAt = s.dirtiedAt.filter { $0.key < count }
        }
        var header = [UInt64](repeating: 0, count: 4)
        header[0] = Self.magic
        header[1] = Self.formatVersion
        header[2] = extentSize
        header[3] = count
        try header.withUnsafeBytes { try file.write($0, at: 0) }
        try file.truncate(to: UInt64(Self.pageBytes + max(1, (words * 8 + Self.pageBytes - 1) / Self.pageBytes) * Self.pageBytes))
        try file.sync()
    }

    static func fit(_ words: [UInt64], to count: Int) -> [UInt64] {
        words.count >= count ? Array(words.prefix(count)) : words + [UInt64](repeating: 0, count: count - words.count)
    }

    /// The current dirty clock: a copy started now may clear a bit not set again since.
    public var dirtyClock: UInt64 { state.withLock { $0.dirtyClock } }

    /// Where a checkpoint starts: the write sequence now and the extents with writes in flight now.
    /// Writes that completed before this point are covered by flushes issued after it.
    public func checkpointBegin() -> (sequence: UInt64, busy: Set<UInt64>) {
        state.withLock { s in (s.sequence, Set(s.inFlight.keys)) }
    }

    /// Checkpoint after both sides flushed (flushes issued after `checkpointBegin`): active extents whose
    /// last write completed before the checkpoint began are clean. Returns how many bits were cleared
    /// (durable when this returns).
    @discardableResult
    public func clearIdle(_ start: (sequence: UInt64, busy: Set<UInt64>)) async throws -> Int {
        let cleared = state.withLock { s -> Int in
            var cleared = 0
            for (extent, last) in s.lastWrite
            where last <= start.sequence && !start.busy.contains(extent) && s.inFlight[extent] == nil {
                s.active[Int(extent / 64)] &= ~(UInt64(1) << (extent % 64))
                if s.dirty[Int(extent / 64)] & (UInt64(1) << (extent % 64)) == 0 {
                    s.durable[Int(extent / 64)] &= ~(UInt64(1) << (extent % 64))
                }
                s.lastWrite[extent] = nil
                cleared += 1
            }
            return cleared
        }
        if cleared > 0 { try await makeDurable() }
        return cleared
    }

    /// The link failed: every extent the activity log holds may be missing on the target (written but
    /// not yet flushed there), so it becomes dirty. Already durable: active bits are on disk.
    public func promoteActive() {
        state.withLock { s in
            for index in s.active.indices where s.active[index] != 0 {
                var word = s.active[index]
                while word != 0 {
                    Self.setDirty(&s, UInt64(index) * 64 + UInt64(word.trailingZeroBitCount))
                    word &= word - 1
                }
            }
        }
    }

    /// A resync copied `extents` (and the target flushed them): clear their dirty bits unless one was set
    /// again after `clock` (a write the target missed while the copy ran).
    public func clearDirty(_ extents: some Sequence<UInt64>, copiedSince clock: UInt64) {
        state.withLock { s in
            for extent in extents where (s.dirtiedAt[extent] ?? 0) <= clock {
                s.dirty[Int(extent / 64)] &= ~(UInt64(1) << (extent % 64))
                if s.active[Int(extent / 64)] & (UInt64(1) << (extent % 64)) == 0 {
                    s.durable[Int(extent / 64)] &= ~(UInt64(1) << (extent % 64))
                }
                s.dirtiedAt[extent] = nil
            }
        }
    }

    /// Dirty extents in order, from `start`, at most `limit`.
    public func dirtyExtents(from start: UInt64 = 0, limit: Int = .max) -> [UInt64] {
        state.withLock { s in
            var result: [UInt64] = []
            var index = Int(start / 64)
            while index < s.dirty.count && result.count < limit {
                var word = s.dirty[index]
                if index == Int(start / 64) { word &= ~0 << (start % 64) }
                while word != 0 && result.count < limit {
                    result.append(UInt64(index) * 64 + UInt64(word.trailingZeroBitCount))
                    word &= word - 1
                }
                index += 1
            }
            return result
        }
    }

    /// Extents with a bit set (dirty or active), in order.
    public func changedExtents() -> [UInt64] {
        state.withLock { s in
            var result: [UInt64] = []
            for index in s.dirty.indices {
                var word = s.persisted(index)
                while word != 0 {
                    result.append(UInt64(index) * 64 + UInt64(word.trailingZeroBitCount))
                    word &= word - 1
                }
            }
            return result
        }
    }

    /// Whether any of `extents` is dirty.
    public func containsDirty(_ extents: ClosedRange<UInt64>) -> Bool {
        state.withLock { s in
            extents.contains { $0 < s.extentCount && s.dirty[Int($0 / 64)] & (UInt64(1) << ($0 % 64)) != 0 }
        }
    }

    /// Bits set (dirty or active): extents the target may lack.
    public var changedCount: UInt64 {
        state.withLock { s in (0..<s.dirty.count).reduce(0) { $0 + UInt64(s.persisted($1).nonzeroBitCount) } }
    }

    public var dirtyCount: UInt64 { state.withLock { s in s.dirty.reduce(0) { $0 + UInt64($1.nonzeroBitCount) } } }

    /// Returns once the file holds every bit as of this call (set or cleared). Concurrent callers share
    /// one write + `fdatasync` (a group commit); the sync runs on the I/O executor.
    public func makeDurable() async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            let start = state.withLock { s -> Bool in
                s.waiters.append(continuation)
                if s.syncing { return false }
                s.syncing = true
                return true
            }
            guard start else { return }
            do {
                try executor.submit { self.syncLoop() }
            } catch {
                let waiters = state.withLock { s -> [CheckedContinuation<Void, any Error>] in
                    s.syncing = false
                    defer { s.waiters = [] }
                    return s.waiters
                }
                for waiter in waiters { waiter.resume(throwing: error) }
            }
        }
    }

    /// Writes the pages that differ from the file and syncs, until no caller waits. On an I/O thread.
    private func syncLoop() {
        while true {
            let batch = state.withLock { s -> ([CheckedContinuation<Void, any Error>], [UInt64], [UInt64])? in
                if s.waiters.isEmpty {
                    s.syncing = false
                    return nil
                }
                defer { s.waiters = [] }
                return (s.waiters, (0..<s.dirty.count).map { s.persisted($0) }, s.onDisk)
            }
            guard let (waiters, wanted, durable) = batch else { return }
            do {
                try writePages(wanted: wanted, onDisk: durable)
                for waiter in waiters { waiter.resume() }
            } catch {
                for waiter in waiters { waiter.resume(throwing: error) }
            }
        }
    }

    /// Writes the bitmap pages of `wanted` that differ from `onDisk`, syncs, and records the result.
    private func writePages(wanted: [UInt64], onDisk: [UInt64]) throws {
        if let failure = state.withLock({ $0.failure }) { throw failure }
        do {
            try writeChangedPages(wanted: wanted, onDisk: onDisk)
        } catch {
            state.withLock { s in if s.failure == nil { s.failure = error } }
            throw error
        }
    }

    /// True once a write or sync of the map failed: the map cannot be trusted until rebuilt.
    public var hasFailed: Bool { state.withLock { $0.failure != nil } }

    private func writeChangedPages(wanted: [UInt64], onDisk: [UInt64]) throws {
        var page = 0
        while page * Self.wordsPerPage < wanted.count {
            let range = (page * Self.wordsPerPage)..<min(wanted.count, (page + 1) * Self.wordsPerPage)
            if onDisk.count != wanted.count || wanted[range] != onDisk[range] {
                let words = Array(wanted[range]).map { $0.littleEndian }
                try words.withUnsafeBytes {
                    try file.write($0, at: UInt64(Self.pageBytes + page * Self.pageBytes))
                }
            }
            page += 1
        }
        try file.sync()
        state.withLock { s in
            s.onDisk = Self.fit(wanted, to: s.dirty.count)
            // Set on disk now, unless a clear decided meanwhile will erase it with the next sync.
            for index in s.durable.indices { s.durable[index] = s.onDisk[index] & s.persisted(index) }
        }
    }


    /// Write-intent for a caller that cannot await (the target's host write path runs on an I/O thread):
    /// marks `extents` dirty and returns once those bits are on disk. Only the first write to an extent
    /// syncs; concurrent callers find their bits made durable by the one before. A map uses either this or
    /// `makeDurable`, not both (the target's change map uses only this).
    public func markDirtyDurably(_ extents: ClosedRange<UInt64>) throws {
        func covered(_ s: State) -> Bool {
            extents.allSatisfy { $0 >= s.extentCount || s.durable[Int($0 / 64)] & (UInt64(1) << ($0 % 64)) != 0 }
        }
        let done = state.withLock { s -> Bool in
            for extent in extents where extent < s.extentCount { Self.setDirty(&s, extent) }
            return covered(s)
        }
        guard !done else { return }
        try blockingSync.withLock { _ in
            let (wanted, onDisk, done) = state.withLock { s in
                ((0..<s.dirty.count).map { s.persisted($0) }, s.onDisk, covered(s))
            }
            if !done { try writePages(wanted: wanted, onDisk: onDisk) }
        }
    }

    /// The dirty bits as words: bit `e % 64` of word `e / 64` is extent `e`.
    public var dirtyWords: [UInt64] { state.withLock { $0.dirty } }
}
