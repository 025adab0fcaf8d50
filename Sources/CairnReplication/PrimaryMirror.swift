import CairnEngine
import CairnIO
import Foundation
import Logging
import MirrorProtocol
import NIOCore
import Synchronization

/// One mirrored volume on the primary (the originating node): the synchronous write path, the
/// link with its retries, fracture, the change map and the resync job.
///
/// Protocol C semantics: a host write is acknowledged when it is written locally **and** the target
/// acknowledged its frames (with FUA both sides made it durable; a host FLUSH flushes both sides).
public final class PrimaryMirror: Sendable {
    let pool: Pool
    let executor: IOExecutor
    let store: MirrorRecordStore
    let settings: ReplicationSettings
    let logger: Logger
    public let changeMap: ChangeMap
    let gate = OverlapGate()

    struct State {
        var record: PrimaryMirrorRecord
        var connection: MirrorConnection?
        /// The target's handle for the volume on the current connection.
        var handle: UInt64 = 0
        /// A connection attempt is under way: others wait for it rather than open their own.
        var connecting: Task<(MirrorConnection, UInt64), any Error>?
        var resync: Task<Void, Never>?
        var jobID: UInt64?
        /// The target was created empty by this establish: holes need not be sent in the first sync.
        var targetFresh = false
        var fractures: UInt64 = 0
        var retransmissions: UInt64 = 0
        var bytesReplicated: UInt64 = 0
        /// Data bytes per second the target acknowledged over the last checkpoint interval.
        var throughput: Double = 0
        var throughputSample: (bytes: UInt64, at: ContinuousClock.Instant)?
        var lastErrorAt: Date?
        /// Connections opened so far: every one after the first may follow a target restart.
        var connectionsOpened: UInt64 = 0
        /// Asynchronous mode's budget of bytes not yet acknowledged by the target; nil: synchronous.
        var lag: LagBudget?
        /// The link's state, epoch, job and lifecycle; `record.state` follows it (`feed`).
        var link: MirrorLinkMachine
        /// The pull set while `re-establish --take-target-changes` copies the target's changes here.
        var pullMap: ChangeMap?
        /// The next resync compares digests first and sends only extents that differ (`--checksum`).
        var checksumResync = false
        /// What the last completed resync did (for status).
        var lastResync: ResyncResult?

        init(record: PrimaryMirrorRecord) {
            self.record = record
            link = MirrorLinkMachine(state: record.state)
        }

        /// Feeds the link machine; the record (saved by the next `update`) takes its state.
        mutating func feed(_ event: MirrorLinkMachine.Event) -> [MirrorLinkMachine.Action] {
            let actions = link.handle(event)
            record.state = link.state
            return actions
        }

        /// A `cairn mirror remove` ran: a write that looked the mirror up just before must not bring its
        /// record back.
        var removed: Bool { link.lifecycle == .removed }
    }

    let state: Mutex<State>
    /// Serializes record saves; each saves the newest record, so two updates racing can never leave the
    /// older one on disk.
    let recordSaves = Mutex<Void>(())

    init(
        record: PrimaryMirrorRecord, changeMap: ChangeMap, pool: Pool, executor: IOExecutor, store: MirrorRecordStore,
        settings: ReplicationSettings, logger: Logger
    ) {
        self.pool = pool
        self.executor = executor
        self.store = store
        self.settings = settings
        self.changeMap = changeMap
        self.logger = logger
        var initial = State(record: record)
        initial.lag = record.asynchronousLagBytes.map { LagBudget(limit: $0) }
        state = Mutex(initial)
    }

    /// The lag budget in asynchronous mode, nil in synchronous mode.
    var asynchronousLag: LagBudget? { state.withLock { $0.lag } }

    public var record: PrimaryMirrorRecord { state.withLock { $0.record } }
    var volumeID: UInt64 { state.withLock { $0.record.volumeID } }

    /// Whether writes go to the target now, and under which link.
    var linkState: (linked: Bool, epoch: UInt64) {
        state.withLock { s in (s.link.isLinked, s.link.epoch) }
    }

    /// Writes go to the target (synchronizing or mirrored); otherwise they are only tracked.
    var isLinked: Bool { state.withLock { $0.link.isLinked } }

    // MARK: host I/O

    /// A host write through the mirror: write-intent first, then the local write and the frames to the
    /// target in parallel; completes when both finished. A target failure fractures the mirror and the
    /// write still succeeds (it is tracked); a local failure fails the write.
    public func write(_ operation: MirrorOperation, fua: Bool, local: @escaping @Sendable () async throws -> Void)
        async throws
    {
        let range = operation.offset..<(operation.offset + max(operation.length, 1))
        let token = await gate.acquire(range)
        let extents = changeMap.extents(offset: operation.offset, length: operation.length)
        let (linked, epoch) = linkState
        if !linked && refusesUntracked(extents) {
            gate.release(token)
            throw untrackedWriteError
        }
        do {
            try await changeMap.beginWrite(extents, dirty: !linked)
        } catch {
            gate.release(token)
            if changeMap.hasFailed { await changeMapFailed(error) }
            throw error
        }
        guard linked else {
            defer {
                changeMap.endWrite(extents, targetMissed: false)
                gate.release(token)
            }
            return try await local()
        }
        // While the target's changes are being taken, writes are synchronous: an acknowledged write the
        // target missed could otherwise be overwritten by the pull.
        if let lag = asynchronousLag, state.withLock({ $0.record.takingTargetChanges != true }) {
            return try await writeAsynchronously(
                operation, fua: fua, extents: extents, token: token, lag: lag, epoch: epoch, local: local)
        }
        defer { gate.release(token) }
        let localResult: Result<Void, any Error>
        let remoteResult: Result<Void, any Error>
        if case .localCopy = operation {
            // The bytes to send exist only once the local copy is done.
            localResult = await Self.capture(local)
            remoteResult = localResult.isSuccess ? await Self.capture { try await self.sendOperation(operation, fua: fua) } : .success(())
        } else {
            async let remote = Self.capture { try await self.sendOperation(operation, fua: fua) }
            localResult = await Self.capture(local)
            remoteResult = await remote
        }
        let lost = await finishRemote(remoteResult, localFailed: !localResult.isSuccess, extents: extents, epoch: epoch)
        if case .failure(let error) = localResult { throw error }
        if lost { throw untrackedWriteError }
    }

    /// The end of a mirrored write: a target failure fractures the mirror; either failure leaves the
    /// extents dirty (a failed local write may have reached the target: the primary's bytes are copied
    /// over later). Returns true when the target missed a write to an extent the pull of the target's
    /// changes has not copied yet: that write must fail (`refusesUntracked`).
    @discardableResult
    func finishRemote(
        _ remote: Result<Void, any Error>, localFailed: Bool, extents: ClosedRange<UInt64>, epoch: UInt64
    ) async -> Bool {
        var targetMissed = localFailed
        if case .failure(let error) = remote {
            targetMissed = true
            await fracture((error as? TargetUnavailable)?.reason ?? "\(error)", epoch: epoch)
        }
        changeMap.endWrite(extents, targetMissed: targetMissed)
        // Still linked (a failed local write, or a failure seen under an older link): the mirror must not
        // look in sync with a dirty extent, so a resync copies it now.
        if targetMissed && isLinked { scheduleResync(reason: "a write the target may lack") }
        return targetMissed && !localFailed && refusesUntracked(extents)
    }

    /// ASYNCHRONOUS mode (opt-in, `--async-lag`): the host's write completes once written locally; its
    /// frames go on in the background, holding the overlap gate (so overlapping writes still reach the
    /// target in order) and a share of the lag budget (so at most that many bytes are unacknowledged by
    /// the target). The extents stay in flight in the change map until the target acknowledges, so a
    /// primary crash resyncs them; what is lost if the primary is lost for good is at most the budget.
    func writeAsynchronously(
        _ operation: MirrorOperation, fua: Bool, extents: ClosedRange<UInt64>, token: UInt64, lag: LagBudget,
        epoch: UInt64, local: @escaping @Sendable () async throws -> Void
    ) async throws {
        let bytes = operation.length
        await lag.acquire(bytes)
        let localResult = await Self.capture(local)
        guard localResult.isSuccess else {
            changeMap.endWrite(extents, targetMissed: true)
            gate.release(token)
            lag.release(bytes)
            if case .failure(let error) = localResult { throw error }
            return
        }
        Task {
            let remote = await Self.capture { try await self.sendOperation(operation, fua: fua) }
            await self.finishRemote(remote, localFailed: false, extents: extents, epoch: epoch)
            self.gate.release(token)
            lag.release(bytes)
        }
    }

    static func capture(_ body: @Sendable () async throws -> Void) async -> Result<Void, any Error> {
        do {
            try await body()
            return .success(())
        } catch {
            return .failure(error)
        }
    }

    /// A host FLUSH: the local commit and the target's flush together. In asynchronous mode only the
    /// local commit: the target catches up within the lag bound, and the checkpoints flush it.
    public func flush(local: @escaping @Sendable () async throws -> Void) async throws {
        let (linked, epoch) = linkState
        guard linked, asynchronousLag == nil else { return try await local() }
        async let remote: Void = flushTarget()
        try await local()
        do {
            try await remote
        } catch let error as TargetUnavailable {
            await fracture(error.reason, epoch: epoch)
        }
    }

    /// What a completed resync did: extents compared by digest, sent, skipped as equal, and taken from
    /// the target (`--take-target-changes`).
    public struct ResyncResult: Sendable, Equatable {
        public var compared: UInt64
        public var sent: UInt64
        public var skipped: UInt64
        public var pulled: UInt64
    }

    /// The last completed resync's result since the daemon started.
    public var lastResync: ResyncResult? { state.withLock { $0.lastResync } }

    /// Marks a target failure the write path turns into a fracture.
    struct TargetUnavailable: Error {
        var reason: String
    }

    /// Which connection the link is on: a job compares it around a batch, because a flush answered on a
    /// newer connection does not cover frames sent on an older one.
    var connectionSerial: UInt64 { state.withLock { $0.connectionsOpened } }

    func flushTarget() async throws {
        let handle = state.withLock { $0.handle }
        _ = try await send(.flush, payload: MirrorHandleValue(handle: handle).payload)
    }

    /// Sends one host operation as frames of at most the frame size, all in flight at once.
    func sendOperation(_ operation: MirrorOperation, fua: Bool) async throws {
        let flags: MirrorFrameFlags = fua ? .fua : []
        switch operation {
        case .write(let offset, let data):
            try await sendData(offset: offset, data: data, flags: flags)
        case .localCopy(let offset, let length):
            let volume = volumeID
            let pool = self.pool
            let data = try await executor.run {
                var buffer = ByteBufferAllocator().buffer(capacity: Int(length))
                try buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: Int(length)) { raw in
                    _ = try pool.read(volumeID: volume, offset: offset, into: UnsafeMutableRawBufferPointer(rebasing: raw[0..<Int(length)]))
                    return Int(length)
                }
                return buffer
            }
            try await sendData(offset: offset, data: data, flags: flags)
        case .writeZeroes(let offset, let length, let punch):
            try await sendRange(.writeZeroes, offset: offset, length: length, flags: punch ? flags.union(.punch) : flags)
        case .trim(let offset, let length):
            try await sendRange(.trim, offset: offset, length: length, flags: flags)
        }
    }

    func sendData(offset: UInt64, data: ByteBuffer, flags: MirrorFrameFlags) async throws {
        let frameSize = Int(state.withLock { $0.record.frameSize })
        let handle = state.withLock { $0.handle }
        if data.readableBytes <= frameSize {
            _ = try await send(.write, flags: flags, payload: MirrorWriteHeader.payload(handle: handle, offset: offset, data: data))
            return
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            var position = 0
            while position < data.readableBytes {
                let length = min(frameSize, data.readableBytes - position)
                let slice = data.getSlice(at: data.readerIndex + position, length: length)!
                let at = offset + UInt64(position)
                group.addTask {
                    let handle = self.state.withLock { $0.handle }
                    _ = try await self.send(.write, flags: flags, payload: MirrorWriteHeader.payload(handle: handle, offset: at, data: slice))
                }
                position += length
            }
            try await group.waitForAll()
        }
    }

    func sendRange(_ command: MirrorCommand, offset: UInt64, length: UInt64, flags: MirrorFrameFlags) async throws {
        let handle = state.withLock { $0.handle }
        _ = try await send(command, flags: flags, payload: MirrorRange(handle: handle, offset: offset, length: length).payload)
    }

    // MARK: state changes

    /// Persists a record change (blocking write on the I/O executor) and installs it.
    func update(_ change: @escaping @Sendable (inout PrimaryMirrorRecord) -> Void) async throws {
        try await update(state: { change(&$0.record) })
    }

    /// Persists a change of the state's record (and link: `State.feed`) the same way.
    func update(state change: (inout State) -> Void) async throws {
        let (record, removed) = state.withLock { s -> (PrimaryMirrorRecord, Bool) in
            change(&s)
            return (s.record, s.removed)
        }
        guard !removed else { return }
        let store = self.store
        try await executor.run { [self] in
            try recordSaves.withLock { _ in
                // The newest record, not the one captured above: a later update may have changed it since.
                let (newest, removed) = state.withLock { ($0.record, $0.removed) }
                guard !removed else { return }
                try store.save(newest, to: store.primaryPath(record.volumeID))
            }
        }
    }

    /// The link failed for good: host writes go on locally and are tracked; the operator is alerted.
    func fracture(_ reason: String, epoch: UInt64? = nil) async {
        let actions = state.withLock { s in feed(.linkFailed(epoch: epoch), reason: reason, &s) }
        guard actions.contains(.recordFracture) else { return }
        await recordFracture(reason)
    }

    /// Feeds the link machine under the state lock and carries out the actions that change memory only;
    /// the durable ones (`recordFracture`, `recordDivergence`) are the caller's, outside the lock.
    @discardableResult
    func feed(_ event: MirrorLinkMachine.Event, reason: String?, _ s: inout State) -> [MirrorLinkMachine.Action] {
        let actions = s.feed(event)
        for action in actions {
            switch action {
            case .closeConnection:
                s.connection?.close()
                s.connection = nil
            case .recordFracture:
                s.record.lastError = reason
                s.lastErrorAt = Date()
                s.fractures += 1
            case .recordPause:
                s.record.lastError = reason
            case .clearLastError:
                s.record.lastError = nil
            case .startResync:
                startResyncJob(&s)
            case .installConnection, .startVerify, .cancelJob:
                // The caller's: it holds what these need (the new connection, the job's id), and cancels a
                // job outside the lock (cancellation handlers run on the cancelling thread).
                break
            }
        }
        return actions
    }

    /// The durable half of a fracture: a new generation, the activity log's extents dirty; then the log
    /// and the alert.
    func recordFracture(_ reason: String) async {
        await recordDivergence(call: "recording the mirror fracture")
        let record = self.record
        logger.error(
            "mirror fractured: host writes continue on the primary and are tracked for resync",
            metadata: ["volume": "\(record.volumeID)", "target": "\(record.target)", "reason": "\(reason)"])
        runAlert(record: record, reason: reason)
    }

    /// The durable half of a fracture or a pause: a new generation (the sides may differ from now on)
    /// and the activity log's extents dirty. A map that cannot be synced is recorded as lost (the next
    /// start resyncs every extent); a record that cannot be saved stops the pool's writes, since a
    /// restart would otherwise trust the target. `call` names the step in that stop's log line.
    func recordDivergence(call: String) async {
        changeMap.promoteActive()
        let generation = UInt64.random(in: 1...UInt64.max)
        do {
            try await update { $0.generations.current = generation }
            do {
                try await changeMap.makeDurable()
            } catch {
                try await update { $0.changeMapLost = true }
            }
        } catch {
            pool.failStop(file: store.primaryPath(record.volumeID), call: call, error: error)
        }
    }

    /// The change map could not be written or synced: the mirror fractures (so writes stop waiting
    /// for the target) and the record says the map is lost, so the next start resyncs everything. If
    /// even that cannot be recorded, the pool stops its writes.
    func changeMapFailed(_ error: any Error) async {
        logger.critical(
            "the mirror's change map failed: the mirror fractures and needs a full resync",
            metadata: ["file": "\(store.changeMapPath(record.volumeID))", "error": "\(error)"])
        await fracture("the change map could not be made durable: \(error)")
        guard record.changeMapLost != true else { return }
        do {
            try await update { $0.changeMapLost = true }
        } catch {
            pool.failStop(file: store.primaryPath(record.volumeID), call: "recording a lost change map", error: error)
        }
    }

    func runAlert(record: PrimaryMirrorRecord, reason: String) {
        guard let command = settings.alertCommand else { return }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-c", command]
        var environment = ProcessInfo.processInfo.environment
        environment["CAIRN_MIRROR_VOLUME"] = (try? Self.volumeName(pool, record.volumeID)) ?? "\(record.volumeID)"
        environment["CAIRN_MIRROR_TARGET"] = record.target
        environment["CAIRN_MIRROR_ERROR"] = reason
        process.environment = environment
        do { try process.run() } catch {
            logger.error("mirror alert command failed to start", metadata: ["error": "\(error)"])
        }
    }

    /// Status counters.
    struct Counters {
        var fractures: UInt64
        var retransmissions: UInt64
        var bytesReplicated: UInt64
        var throughput: Double
        var jobID: UInt64?
        var connected: Bool
    }

    /// Updates the throughput from the bytes acknowledged since the last sample (called every checkpoint
    /// interval).
    func sampleThroughput() {
        state.withLock { s in
            let now = ContinuousClock.now
            if let sample = s.throughputSample {
                let seconds = Double((now - sample.at).components.seconds) + Double((now - sample.at).components.attoseconds) / 1e18
                if seconds > 0 { s.throughput = Double(s.bytesReplicated - sample.bytes) / seconds }
            }
            s.throughputSample = (s.bytesReplicated, now)
        }
    }

    var counters: Counters {
        state.withLock { s in
            Counters(
                fractures: s.fractures, retransmissions: s.retransmissions, bytesReplicated: s.bytesReplicated,
                throughput: s.throughput, jobID: s.jobID, connected: s.connection?.isActive ?? false)
        }
    }

    /// `cairn mirror remove`: stops everything and records nothing more.
    func markRemoved() { stop(.remove) }

    /// Closes the link (daemon shutdown); the record stays as it is for the next start.
    func shutdown() { stop(.stop) }

    private func stop(_ event: MirrorLinkMachine.Event) {
        let job = state.withLock { s in feed(event, reason: nil, &s).contains(.cancelJob) ? s.resync : nil }
        job?.cancel()
    }
}

extension Result {
    var isSuccess: Bool {
        if case .success = self { return true }
        return false
    }
}
