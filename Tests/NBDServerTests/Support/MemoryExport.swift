import Foundation
import NBDProtocol
import NBDServer
import NIOCore
import Synchronization

/// A sparse in-memory export for tests: 64 KiB pages allocated on first write, freed by TRIM and by
/// WRITE_ZEROES without NO_HOLE, and reported through `base:allocation`. It can be told to fail or to
/// delay commands, and it counts what it was asked to do.
final class MemoryExport: NBDExport {
    static let pageSize = 64 * 1024

    struct Counters: Sendable {
        var reads = 0
        var writes = 0
        var flushes = 0
        var trims = 0
        var zeroes: [(punch: Bool, fast: Bool)] = []
        var caches = 0
        var blockStatus = 0
        var fuaWrites = 0
        var copyAndWrites = 0
    }

    fileprivate struct State {
        var pages: [UInt64: [UInt8]] = [:]
        var counters = Counters()
        var failures: [NBDCommandType: NBDExportError] = [:]
        var delays: [NBDCommandType: TimeAmount] = [:]
        var defaultDelay: TimeAmount?
        /// Commands whose completions wait for `release` (a gate, not a delay: deterministic).
        var held: Set<NBDCommandType> = []
        var waiting: [EventLoopPromise<Void>] = []
        var running = 0
        var maxRunning = 0
        /// Pages a write would copy (`markShared`), for `x-cairn:copy-on-write`.
        var sharedPages: Set<UInt64> = []
    }

    let name: String
    let exportDescription: String?
    let size: UInt64
    let capabilities: NBDExportCapabilities
    let blockSizes: NBDBlockSizeConstraints
    let metaContexts: [String]
    fileprivate let state = Mutex(State())

    init(
        name: String,
        size: UInt64,
        description: String? = nil,
        capabilities: NBDExportCapabilities = MemoryExport.allCapabilities,
        blockSizes: NBDBlockSizeConstraints = .init(minimum: 1, preferred: 4096, maximumPayload: 32 * 1024 * 1024),
        metaContexts: [String] = []
    ) {
        self.name = name
        self.size = size
        self.exportDescription = description
        self.capabilities = capabilities
        self.blockSizes = blockSizes
        self.metaContexts = metaContexts
    }

    static let allCapabilities: NBDExportCapabilities = [
        .flush, .fua, .trim, .writeZeroes, .fastZero, .cache, .blockStatus, .multiConnection,
    ]

    var counters: Counters { state.withLock { $0.counters } }
    var allocatedPages: Int { state.withLock { $0.pages.count } }

    /// The next `command` fails with `error`.
    func failNext(_ command: NBDCommandType, with error: NBDExportError) {
        state.withLock { $0.failures[command] = error }
    }

    /// Completes later `command`s (every command if nil) after `delay` (nil: at once).
    func setDelay(_ delay: TimeAmount?, for command: NBDCommandType? = nil) {
        state.withLock { state in
            if let command { state.delays[command] = delay } else { state.defaultDelay = delay }
        }
    }

    /// The most export calls that were running at the same time.
    var maxRunning: Int { state.withLock { $0.maxRunning } }

    /// Completions of `command` wait until `release()`.
    func hold(_ command: NBDCommandType) { state.withLock { _ = $0.held.insert(command) } }

    /// Calls of held commands now waiting.
    var heldCount: Int { state.withLock { $0.waiting.count } }

    /// Lets every held call complete, and later ones run freely.
    func release() {
        let waiting = state.withLock { state -> [EventLoopPromise<Void>] in
            state.held = []
            defer { state.waiting = [] }
            return state.waiting
        }
        for promise in waiting { promise.succeed() }
    }

    /// Bytes as a client would read them (holes are zeroes).
    func contents(offset: UInt64, length: Int) -> [UInt8] {
        state.withLock { state in
            (0..<UInt64(length)).map { index in
                let position = offset + index
                let page = position / UInt64(Self.pageSize)
                return state.pages[page]?[Int(position % UInt64(Self.pageSize))] ?? 0
            }
        }
    }

    fileprivate func complete<Value: Sendable>(
        _ command: NBDCommandType,
        on eventLoop: any EventLoop,
        _ body: (inout State) -> Value
    ) -> EventLoopFuture<Value> {
        let (result, delay, gate): (Result<Value, NBDExportError>, TimeAmount?, EventLoopPromise<Void>?) =
            state.withLock { state in
                state.running += 1
                state.maxRunning = max(state.maxRunning, state.running)
                let delay = state.delays[command] ?? state.defaultDelay
                var gate: EventLoopPromise<Void>?
                if state.held.contains(command) {
                    gate = eventLoop.makePromise()
                    state.waiting.append(gate!)
                }
                if let failure = state.failures.removeValue(forKey: command) { return (.failure(failure), delay, gate) }
                return (.success(body(&state)), delay, gate)
            }
        if let gate {
            return gate.futureResult.flatMapThrowing {
                self.state.withLock { $0.running -= 1 }
                return try result.get()
            }
        }
        guard let delay else {
            state.withLock { $0.running -= 1 }
            return eventLoop.makeCompletedFuture(result.mapError { $0 as any Error })
        }
        return eventLoop.scheduleTask(in: delay) {
            self.state.withLock { $0.running -= 1 }
            return try result.get()
        }.futureResult
    }

    /// Calls `body(page, offsetInPage, length)` for each page piece of [offset, offset + length).
    fileprivate static func forEachPiece(offset: UInt64, length: UInt64, _ body: (UInt64, Int, Int) -> Void) {
        var position = offset
        let end = offset + length
        while position < end {
            let page = position / UInt64(pageSize)
            let inPage = Int(position % UInt64(pageSize))
            let piece = Int(min(UInt64(pageSize - inPage), end - position))
            body(page, inPage, piece)
            position += UInt64(piece)
        }
    }

    func read(offset: UInt64, length: UInt32, eventLoop: any EventLoop) -> EventLoopFuture<[NBDReadSegment]> {
        complete(.read, on: eventLoop) { state in
            state.counters.reads += 1
            var segments: [NBDReadSegment] = []
            var position = offset
            Self.forEachPiece(offset: offset, length: UInt64(length)) { page, inPage, piece in
                defer { position += UInt64(piece) }
                guard let bytes = state.pages[page] else {
                    if case .hole(let start, let holeLength) = segments.last {
                        segments[segments.count - 1] = .hole(offset: start, length: holeLength + UInt32(piece))
                    } else {
                        segments.append(.hole(offset: position, length: UInt32(piece)))
                    }
                    return
                }
                segments.append(.data(offset: position, data: ByteBuffer(bytes: bytes[inPage..<inPage + piece])))
            }
            return segments
        }
    }

    func write(offset: UInt64, data: ByteBuffer, fua: Bool, eventLoop: any EventLoop) -> EventLoopFuture<Void> {
        complete(.write, on: eventLoop) { state in
            state.counters.writes += 1
            if fua { state.counters.fuaWrites += 1 }
            var source = data
            Self.forEachPiece(offset: offset, length: UInt64(data.readableBytes)) { page, inPage, piece in
                let slice = source.readSlice(length: piece)!
                state.pages[page, default: [UInt8](repeating: 0, count: Self.pageSize)].withUnsafeMutableBytes { page in
                    slice.withUnsafeReadableBytes {
                        page.baseAddress!.advanced(by: inPage).copyMemory(from: $0.baseAddress!, byteCount: piece)
                    }
                }
            }
        }
    }

    func flush(eventLoop: any EventLoop) -> EventLoopFuture<Void> {
        complete(.flush, on: eventLoop) { $0.counters.flushes += 1 }
    }

    func trim(offset: UInt64, length: UInt64, fua: Bool, eventLoop: any EventLoop) -> EventLoopFuture<Void> {
        complete(.trim, on: eventLoop) { state in
            state.counters.trims += 1
            Self.zero(&state, offset: offset, length: length, punch: true)
        }
    }

    func writeZeroes(
        offset: UInt64,
        length: UInt64,
        punch: Bool,
        fast: Bool,
        fua: Bool,
        eventLoop: any EventLoop
    ) -> EventLoopFuture<Void> {
        complete(.writeZeroes, on: eventLoop) { state in
            state.counters.zeroes.append((punch, fast))
            Self.zero(&state, offset: offset, length: length, punch: punch)
        }
    }

    private static func zero(_ state: inout State, offset: UInt64, length: UInt64, punch: Bool) {
        forEachPiece(offset: offset, length: length) { page, inPage, piece in
            if punch, piece == pageSize {
                state.pages[page] = nil
            } else if punch, state.pages[page] == nil {
                return
            } else {
                state.pages[page, default: [UInt8](repeating: 0, count: pageSize)].withUnsafeMutableBytes {
                    _ = memset($0.baseAddress!.advanced(by: inPage), 0, piece)
                }
            }
        }
    }

    func cache(offset: UInt64, length: UInt64, eventLoop: any EventLoop) -> EventLoopFuture<Void> {
        complete(.cache, on: eventLoop) { $0.counters.caches += 1 }
    }

    func blockStatus(
        context: String,
        offset: UInt64,
        length: UInt64,
        eventLoop: any EventLoop
    ) -> EventLoopFuture<[NBDExtent]> {
        complete(.blockStatus, on: eventLoop) { state in
            state.counters.blockStatus += 1
            if context == NBDMetaContext.cairnCopyOnWrite {
                return Self.sharing(state, offset: offset, length: length, size: size)
            }
            var extents: [NBDExtent] = []
            let hole = NBDAllocationState([.hole, .zero]).rawValue
            Self.forEachPiece(offset: offset, length: min(length, size - offset)) { page, _, piece in
                let flags = state.pages[page] == nil ? hole : 0
                if let last = extents.last, last.flags == flags {
                    extents[extents.count - 1].length += UInt64(piece)
                } else {
                    extents.append(NBDExtent(length: UInt64(piece), flags: flags))
                }
            }
            return extents
        }
    }
}

/// A catalog of memory exports that records attach and detach calls.
final class MemoryCatalog: NBDExportCatalog {
    private struct State {
        var attached: [UInt64: String] = [:]
        var attachCount = 0
        var detachCount = 0
        var detachedSessions: [UInt64] = []
    }

    let exports: [String: MemoryExport]
    private let state = Mutex(State())

    init(_ exports: [MemoryExport]) {
        self.exports = Dictionary(uniqueKeysWithValues: exports.map { ($0.name, $0) })
    }

    var attachCount: Int { state.withLock { $0.attachCount } }
    var detachCount: Int { state.withLock { $0.detachCount } }
    var attachedSessions: Int { state.withLock { $0.attached.count } }
    var detachedSessions: [UInt64] { state.withLock { $0.detachedSessions } }

    func listExports(session: NBDSessionInfo) -> [NBDExportListing] {
        exports.values.sorted { $0.name < $1.name }.map {
            NBDExportListing(name: $0.name, description: $0.exportDescription)
        }
    }

    func describe(name: String, session: NBDSessionInfo) -> (any NBDExport)? {
        exports[name]
    }

    func attach(name: String, session: NBDSessionInfo) throws -> any NBDExport {
        guard let export = exports[name] else { throw NBDExportError(.invalid, "no export \(name)") }
        state.withLock {
            $0.attachCount += 1
            $0.attached[session.id] = name
        }
        return export
    }

    func detach(_ export: any NBDExport, session: NBDSessionInfo) {
        state.withLock {
            $0.detachCount += 1
            $0.detachedSessions.append(session.id)
            $0.attached[session.id] = nil
        }
    }
}

// MARK: x-cairn:copy-on-write (pages are the copy-on-write chunks)

extension MemoryExport {
    /// Marks the pages overlapping the range as shared, as a snapshot would.
    func markShared(offset: UInt64, length: UInt64) {
        state.withLock { state in
            Self.forEachPiece(offset: offset, length: length) { page, _, _ in state.sharedPages.insert(page) }
        }
    }

    /// Copies the source page to the target page with the buffer written in, and unshares the target;
    /// a copy size other than the page size is refused, as Cairn refuses one other than its chunk size.
    func copyAndWrite(
        target: UInt64,
        source: UInt64,
        copySize: UInt32,
        buffer: ByteBuffer,
        bufferOffset: UInt32,
        fua: Bool,
        eventLoop: any EventLoop
    ) -> EventLoopFuture<Void> {
        guard copySize == UInt32(Self.pageSize) else {
            return eventLoop.makeFailedFuture(NBDExportError(.invalid, "the copy size must be \(Self.pageSize)"))
        }
        return complete(.cairnCopyAndWrite, on: eventLoop) { state in
            state.counters.copyAndWrites += 1
            if fua { state.counters.fuaWrites += 1 }
            let sourcePage = source / UInt64(Self.pageSize)
            let targetPage = target / UInt64(Self.pageSize)
            var bytes = state.pages[sourcePage] ?? [UInt8](repeating: 0, count: Self.pageSize)
            let range = Int(bufferOffset)..<Int(bufferOffset) + buffer.readableBytes
            bytes.replaceSubrange(range, with: buffer.readableBytesView)
            state.pages[targetPage] = bytes
            state.sharedPages.remove(targetPage)
        }
    }

    fileprivate static func sharing(_ state: State, offset: UInt64, length: UInt64, size: UInt64) -> [NBDExtent] {
        var extents: [NBDExtent] = []
        forEachPiece(offset: offset, length: min(length, size - offset)) { page, _, piece in
            let flags = state.sharedPages.contains(page) ? NBDCopyOnWriteState.shared.rawValue : 0
            if let last = extents.last, last.flags == flags {
                extents[extents.count - 1].length += UInt64(piece)
            } else {
                extents.append(NBDExtent(length: UInt64(piece), flags: flags))
            }
        }
        return extents
    }
}
