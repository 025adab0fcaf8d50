import CairnEngine
import CairnIO
import Synchronization

/// The one-way mirror device for one volume during one backup: two images, the sessions routed
/// to each, and the range locks they share. Sessions open at the split (T) use image A and their
/// writes reach A and B; sessions opened later use B only. When every A session has closed (or the
/// operator seals, or the drain times out) A is frozen and every session uses B.
public final class OneWayMirror: @unchecked Sendable {
    // @unchecked: mutable state is guarded by `monitor`; `images` changes only under the route's hold.
    public enum Phase: String, Sendable, Codable {
        /// `--method mirror` only: the copy is being built; every write goes to both images.
        case establishing
        /// Split at T: A sessions on A, the others on B.
        case split
        /// A no longer changes; every session uses B.
        case frozen
    }

    /// How image A stopped changing.
    public enum DrainOutcome: String, Sendable, Codable {
        /// Every session open at T closed.
        case drained
        /// `cairn backup seal`: the operator said the old work is done.
        case sealed
        /// The drain timeout passed with sessions still on A.
        case timeout
    }

    let images: any MirrorImages
    public let locks = RangeLockTable()
    private let monitor = Monitor()
    private var phase: Phase
    private var sessionsOnA: [UInt64: String] = [:]
    private var outcome: DrainOutcome?
    /// Lock blocks an A session wrote or discarded: with the changed blocks since the previous backup's
    /// snapshot, what an incremental archive must record.
    private var writtenByA: Set<UInt64> = []

    init(images: any MirrorImages, phase: Phase) {
        self.images = images
        self.phase = phase
    }

    public var method: BackupMethod { images.method }
    public var currentPhase: Phase { monitor.withLock { phase } }

    /// Sessions still on image A: id → remote address.
    public var sessionsStillOnA: [UInt64: String] { monitor.withLock { phase == .split ? sessionsOnA : [:] } }

    /// The side `session` uses now.
    public func side(of session: UInt64) -> MirrorSide {
        monitor.withLock { phase == .split && sessionsOnA[session] != nil ? .a : .b }
    }

    /// Called under the route's hold at T: `sessions` are the ones open now.
    func split(sessions: [UInt64: String]) {
        monitor.withLock {
            sessionsOnA = sessions
            phase = .split
            if sessions.isEmpty { outcome = .drained }
            monitor.broadcast()
        }
    }

    /// A session closed; if it was the last on A, A is drained.
    func sessionClosed(_ session: UInt64) {
        monitor.withLock {
            guard sessionsOnA.removeValue(forKey: session) != nil else { return }
            if sessionsOnA.isEmpty && phase == .split && outcome == nil { outcome = .drained }
            monitor.broadcast()
        }
    }

    /// The operator's seal: A is taken as consistent now.
    func seal() -> Bool {
        monitor.withLock {
            guard phase == .split, outcome == nil else { return false }
            outcome = .sealed
            monitor.broadcast()
            return true
        }
    }

    /// Waits at most `timeout` for A to be drained or sealed; nil if it is still draining.
    func waitForDrain(timeoutNanoseconds timeout: UInt64) -> DrainOutcome? {
        monitor.withLock {
            if outcome == nil { monitor.wait(timeoutNanoseconds: timeout) }
            return outcome
        }
    }

    /// The drain timeout passed: A is frozen with the sessions still on it (unless it drained just now).
    func expire() -> DrainOutcome {
        monitor.withLock {
            if outcome == nil { outcome = .timeout }
            return outcome!
        }
    }

    /// Called under the route's hold: from now on every session uses B.
    func freeze() {
        monitor.withLock {
            phase = .frozen
            monitor.broadcast()
        }
    }

    /// Lock blocks A sessions changed.
    var blocksWrittenByA: Set<UInt64> { monitor.withLock { writtenByA } }

    // MARK: I/O of the sessions

    public func read(session: UInt64, offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws -> [ReadExtent] {
        let side = self.side(of: session)
        return try locks.withRange(offset: offset, length: UInt64(buffer.count), exclusive: false) {
            try images.read(side, offset: offset, into: buffer)
        }
    }

    /// Returns true when FUA still owes a pool commit: the caller's group commit, before the reply (no
    /// I/O thread waits for it, as on a volume without a backup).
    public func write(session: UInt64, offset: UInt64, source: WriteSource, fua: Bool) throws -> Bool {
        let side = self.side(of: session)
        let owed = try locks.withRange(offset: offset, length: source.byteCount, exclusive: true) {
            try images.write(side, offset: offset, source: source, fua: fua)
        }
        if side == .a { noteWrittenByA(offset: offset, length: source.byteCount) }
        return owed
    }

    /// FLUSH needs `flush()` (state outside the pool, the log method's journal); otherwise a pool group
    /// commit is all it takes.
    public var flushesOutsidePool: Bool { images.flushesOutsidePool }

    public func discard(session: UInt64, offset: UInt64, length: UInt64, mode: DiscardMode, fua: Bool) throws {
        let side = self.side(of: session)
        try locks.withRange(offset: offset, length: length, exclusive: true) {
            try images.discard(side, offset: offset, length: length, mode: mode, fua: fua)
        }
        if side == .a { noteWrittenByA(offset: offset, length: length) }
    }

    /// COPY_AND_WRITE by the session's rules: on A the engine copies inside image A and the
    /// chunk A ends up with reaches B too; on B only B. The source's blocks are held shared and the
    /// target's exclusive, so the copy never interleaves with a write to either.
    public func copyAndWrite(session: UInt64, _ command: CopyAndWrite, fua: Bool) throws {
        guard !command.source.addingReportingOverflow(UInt64(command.copySize)).overflow,
            !command.target.addingReportingOverflow(UInt64(command.copySize)).overflow
        else { throw EngineError(.outOfRange, "COPY_AND_WRITE range is past the end of the volume") }
        let side = self.side(of: session)
        try locks.withRanges(shared: command.sourceRange, exclusive: command.targetRange) {
            try images.copyAndWrite(side, command, fua: fua)
        }
        if side == .a { noteWrittenByA(offset: command.target, length: UInt64(command.copySize)) }
    }

    /// NBD `base:allocation` as the session's image reads: B's holes for a new session, A's for an old
    /// one. Map lookups only and no range locks: like any block status answer, a hint of an instant.
    public func allocation(session: UInt64, offset: UInt64, length: UInt64, maximumExtents: Int) throws -> [AllocationExtent] {
        try images.allocation(side(of: session), offset: offset, length: length, maximumExtents: maximumExtents)
    }

    /// FLUSH from any session of the volume.
    public func flush() throws { try images.flush() }

    private func noteWrittenByA(offset: UInt64, length: UInt64) {
        let blocks = RangeLockTable.blocks(offset: offset, length: length)
        monitor.withLock { for block in blocks { writtenByA.insert(block) } }
    }
}

/// The gate every session of one volume passes for each request, so that the backup can change
/// routing (install a mirror at T, freeze, remove it) at an instant when no request of the volume is
/// in flight: a request either ran entirely before the change or entirely after it. The hold waits
/// for the requests in flight (milliseconds) and never refuses a session or a request.
///
/// Every request of every volume passes here, so the path without a hold is two atomic increments
/// and a load, no lock (Dekker's pattern: a request raises `inFlight` then reads `holding`; a hold
/// raises `holding` then reads `inFlight`; sequentially consistent, one of them sees the other).
public final class VolumeRoute: @unchecked Sendable {
    // @unchecked: `current` is written only inside a hold (no request in flight, new ones waiting) and
    // read by requests after they saw `holding` false, which the hold stored after writing it.
    private let monitor = Monitor()
    private let inFlight = Atomic<Int>(0)
    private let holding = Atomic<Bool>(false)
    private let active = Atomic<Bool>(false)
    private var current: OneWayMirror?

    public init() {}

    /// The mirror active on the volume, if any.
    public var mirror: OneWayMirror? { monitor.withLock { current } }

    /// True while a mirror is installed (a lock-free hint for the read fast path).
    public var isActive: Bool { active.load(ordering: .acquiring) }

    /// Runs one request: `plain` when no backup splits the volume, else `mirrored` with the mirror.
    public func perform<T>(_ plain: () throws -> T, mirrored: (OneWayMirror) throws -> T) throws -> T {
        while true {
            inFlight.add(1, ordering: .sequentiallyConsistent)
            if !holding.load(ordering: .sequentiallyConsistent) { break }
            leave()
            monitor.withLock {
                while holding.load(ordering: .sequentiallyConsistent) { monitor.wait() }
            }
        }
        defer { leave() }
        guard let mirror = current else { return try plain() }
        return try mirrored(mirror)
    }

    /// Runs `plain` if no backup splits the volume and none is changing its routing; nil, having run
    /// nothing, otherwise. Never waits: for requests served on an event loop.
    public func performIfPlain<T>(_ plain: () throws -> T) rethrows -> T? {
        inFlight.add(1, ordering: .sequentiallyConsistent)
        defer { leave() }
        guard !holding.load(ordering: .sequentiallyConsistent), current == nil else { return nil }
        return try plain()
    }

    private func leave() {
        let left = inFlight.subtract(1, ordering: .sequentiallyConsistent).newValue
        if left == 0 && holding.load(ordering: .sequentiallyConsistent) {
            monitor.withLock { monitor.broadcast() }
        }
    }

    /// Stops new requests, waits for those in flight, runs `body` (which may change the mirror).
    func hold<T>(_ body: () throws -> T) rethrows -> T {
        monitor.withLock {
            while holding.load(ordering: .sequentiallyConsistent) { monitor.wait() }
            holding.store(true, ordering: .sequentiallyConsistent)
            while inFlight.load(ordering: .sequentiallyConsistent) > 0 { monitor.wait() }
        }
        defer {
            monitor.withLock {
                holding.store(false, ordering: .sequentiallyConsistent)
                monitor.broadcast()
            }
        }
        return try body()
    }

    /// Installs or removes the mirror; call inside `hold`.
    func install(_ mirror: OneWayMirror?) {
        monitor.withLock {
            current = mirror
            active.store(mirror != nil, ordering: .releasing)
        }
    }
}
