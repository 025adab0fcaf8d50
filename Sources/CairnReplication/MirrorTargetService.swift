import CairnEngine
import CairnIO
import Foundation
import Logging
import MirrorProtocol
import NIOCore
import Synchronization

/// The target's side of the network-mirroring design: validates each management frame against its own tables (the pool's
/// volumes and the target records) and applies data frames to the paired volume. Every refusal is a
/// typed `MirrorRemoteError` whose message a person on the primary can act on; a refused frame changes
/// nothing.
public final class MirrorTargetService: Sendable {
    let pool: Pool
    let executor: IOExecutor
    let store: MirrorRecordStore
    let logger: Logger

    struct State {
        var records: [UInt64: TargetMirrorRecord] = [:]
        /// The connection currently mirroring each volume (a newer establish from the same pair takes over:
        /// after a primary crash the old connection may not have been noticed dead yet).
        var owners: [UInt64: ObjectIdentifier] = [:]
        /// Change maps of volumes hosts may write here (severed or promoted): the extents they wrote.
        var maps: [UInt64: ChangeMap] = [:]
    }

    let state = Mutex(State())
    let mapCreation = Mutex<Void>(())
    /// Serializes the pairings' transitions: each feeds one event to the volume's `MirrorTargetMachine` and
    /// carries out its actions (at most one record save) before the next begins, so two changes (two
    /// first host writes after a sever, a write and a `synchronized`) never save over each other.
    let transitions = Mutex<Void>(())

    public init(pool: Pool, executor: IOExecutor, store: MirrorRecordStore, logger: Logger) throws {
        self.pool = pool
        self.executor = executor
        self.store = store
        self.logger = logger
        let known = Set(pool.volumes.list().map(\.id))
        var records: [UInt64: TargetMirrorRecord] = [:]
        for path in try store.paths(prefix: "target") {
            let record = try store.load(TargetMirrorRecord.self, from: path)
            guard known.contains(record.volumeID) else {
                // The volume was deleted: the pairing went with it.
                try? store.remove(path)
                continue
            }
            records[record.volumeID] = record
        }
        var maps: [UInt64: ChangeMap] = [:]
        for record in records.values {
            let path = store.targetChangeMapPath(record.volumeID)
            guard FileManager.default.fileExists(atPath: path) else { continue }
            if record.changedHere || record.severed {
                maps[record.volumeID] = try ChangeMap.open(path: path, executor: executor)
            } else {
                // `synchronized` or a discard cleared the record; the map's removal did not happen.
                try? store.remove(path)
            }
        }
        state.withLock { s in
            s.records = records
            s.maps = maps
        }
    }

    /// True while the volume is paired with a primary and not severed: hosts may only read it.
    public func isProtected(volumeID: UInt64) -> Bool {
        state.withLock { s in s.records[volumeID].map { !$0.severed } ?? false }
    }

    /// True when the volume is paired (severed or not): management must not delete or resize it.
    public func isPaired(volumeID: UInt64) -> Bool { state.withLock { $0.records[volumeID] != nil } }

    /// True when `beforeHostWrite` has work to do for this volume (a paired volume's bookkeeping, which
    /// writes durable state, or its refusal): such writes cannot be done on an event loop.
    public func hostWritesNeedBookkeeping(volumeID: UInt64) -> Bool {
        state.withLock { $0.records[volumeID] != nil }
    }

    /// A host is about to write `length` bytes at `offset` of a paired volume (only allowed while severed
    /// or promoted): its extents are set in the target's change map, durably, before its data is written
    /// (write-intent, as on the primary), and the first such write durably records that the target
    /// changed. Blocking: call on an I/O thread.
    public func beforeHostWrite(volumeID: UInt64, offset: UInt64, length: UInt64) throws {
        guard let record = state.withLock({ $0.records[volumeID] }) else { return }
        // Once the record says so, a write only adds bits to the map: no transition, no wait for one.
        var peek = MirrorTargetMachine(volumeID: volumeID, record: record)
        if case .accepted([.markExtentsDirty]) = peek.handle(.hostWrite) {
            return try markDirty(volumeID, offset: offset, length: length)
        }
        let transition = try apply(.hostWrite, volumeID: volumeID, write: (offset, length))
        switch transition.outcome {
        case .refused(let reason):
            throw ReplicationError(.wrongState, reason.message)
        case .accepted(let actions):
            guard actions.contains(where: { if case .saveRecord = $0 { true } else { false } }) else { return }
            logger.notice("mirror target written by a host while severed", metadata: ["volume": "\(volumeID)"])
        }
    }

    private func markDirty(_ volumeID: UInt64, offset: UInt64, length: UInt64) throws {
        let map = try changeMap(volumeID)
        try map.markDirtyDurably(map.extents(offset: offset, length: length))
    }

    /// A transition's outcome and the volume's record after it.
    struct Transition {
        var outcome: MirrorTargetMachine.Outcome
        var record: TargetMirrorRecord?
    }

    /// Feeds `event` to the volume's machine and carries out the actions of the transition, all under
    /// `transitions`; the new record is installed as soon as it is saved. `connection`: the one that sent
    /// the frame; `write`: the host write's range. Throws when an action fails. Blocking.
    func apply(
        _ event: MirrorTargetMachine.Event, volumeID: UInt64, connection: ObjectIdentifier? = nil,
        write: (offset: UInt64, length: UInt64)? = nil
    ) throws -> Transition {
        try transitions.withLock { _ in
            var machine = MirrorTargetMachine(volumeID: volumeID, record: state.withLock { $0.records[volumeID] })
            let outcome = machine.handle(event)
            guard case .accepted(let actions) = outcome else { return Transition(outcome: outcome, record: machine.record) }
            for action in actions {
                switch action {
                case .createChangeMap:
                    _ = try changeMap(volumeID)
                case .markExtentsDirty:
                    guard let write else { preconditionFailure("a host write names its range") }
                    try markDirty(volumeID, offset: write.offset, length: write.length)
                case .saveRecord(let record):
                    try store.save(record, to: store.targetPath(volumeID))
                    state.withLock { $0.records[volumeID] = record }
                case .removeRecord:
                    try store.remove(store.targetPath(volumeID))
                    state.withLock { $0.records[volumeID] = nil }
                case .removeChangeMap:
                    try removeChangeMap(volumeID)
                case .takeOwnership:
                    guard let connection else { preconditionFailure("an establish names its connection") }
                    state.withLock { $0.owners[volumeID] = connection }
                case .releaseOwnership:
                    state.withLock { $0.owners[volumeID] = nil }
                case .answerEstablish:
                    break
                }
            }
            return Transition(outcome: outcome, record: machine.record)
        }
    }

    /// The volume's target change map, created (empty, durable) on first use. Blocking.
    func changeMap(_ volumeID: UInt64) throws -> ChangeMap {
        if let map = state.withLock({ $0.maps[volumeID] }) { return map }
        let size = try engine { try pool.volumes.size(volumeID: volumeID) }
        let path = store.targetChangeMapPath(volumeID)
        // One creator at a time (a second `create` would replace the first one's file), outside the state lock.
        return try mapCreation.withLock { _ in
            if let map = state.withLock({ $0.maps[volumeID] }) { return map }
            let map = try ChangeMap.create(
                path: path, executor: executor, extentSize: Self.changeMapExtentSize, volumeSize: size)
            state.withLock { $0.maps[volumeID] = map }
            return map
        }
    }

    /// Bytes per bit of a target change map: the primary's default extent size (the primary converts when
    /// its own differs).
    static let changeMapExtentSize = ReplicationSettings.defaultExtentSize

    /// Drops the volume's target change map (its changes were taken or discarded). Blocking.
    func removeChangeMap(_ volumeID: UInt64) throws {
        state.withLock { s in s.maps[volumeID] = nil }
        try store.remove(store.targetChangeMapPath(volumeID))
    }

    /// Failover (`cairn mirror promote`, on the target): the volume becomes writable by hosts, its data
    /// starts a new generation, and the primary is fenced off: a data frame it still sends is refused, so
    /// it fractures, and it learns of the promotion at its next establish. Durable before it is reported.
    /// Blocking.
    public func promote(volumeID: UInt64) throws -> TargetMirrorRecord {
        let transition = try apply(.promote(generation: UInt64.random(in: 1...UInt64.max)), volumeID: volumeID)
        guard case .accepted(let actions) = transition.outcome, let record = transition.record else {
            throw ReplicationError(.notFound, "volume \(volumeID) is not the target of a mirror here")
        }
        if !actions.isEmpty {
            logger.notice(
                "mirror target promoted: writable by hosts, the primary is fenced off",
                metadata: ["volume": "\(volumeID)", "primary": "\(record.primaryNode)"])
        }
        return record
    }

    /// Extents set in the volume's target change map (written here while severed or promoted).
    public func changedExtents(volumeID: UInt64) -> UInt64 {
        state.withLock { $0.maps[volumeID] }?.dirtyCount ?? 0
    }

    /// Pairings for status.
    public func records() -> [TargetMirrorRecord] { state.withLock { Array($0.records.values) } }

    public func isConnected(volumeID: UInt64) -> Bool { state.withLock { $0.owners[volumeID] != nil } }

    /// A connection closed: its volumes are no longer mirrored (they stay read-only until severed).
    func connectionClosed(_ connection: ObjectIdentifier) {
        state.withLock { s in
            for (volume, owner) in s.owners where owner == connection { s.owners[volume] = nil }
        }
    }

    /// Answers one authenticated request frame.
    func handle(_ frame: MirrorFrame, connection: ObjectIdentifier, node: String) async -> MirrorFrame {
        do {
            let reply: ByteBuffer
            switch frame.command {
            case .establish:
                let request = try MirrorEstablishRequest.decode(payload: frame.payload)
                reply = try await executor.run { try self.establish(request, connection: connection, node: node) }.payload
            case .write, .writeZeroes, .trim:
                let work = try dataWork(frame, connection: connection)
                try await executor.run { try self.engine(work.apply) }
                reply = ByteBuffer()
            case .flush:
                let request = try MirrorHandleValue.decode(payload: frame.payload)
                _ = try owned(request.handle, connection)
                try await executor.run { try self.engine { try self.pool.flush() } }
                reply = ByteBuffer()
            case .synchronized, .sever, .remove:
                let request = try MirrorHandleValue.decode(payload: frame.payload)
                let volume = try owned(request.handle, connection)
                let command = frame.command
                try await executor.run { try self.update(volume, command: command, value: request.value) }
                reply = ByteBuffer()
            case .resize:
                let request = try MirrorHandleValue.decode(payload: frame.payload)
                let volume = try owned(request.handle, connection)
                try await executor.run { try self.resize(volume, to: request.value) }
                reply = ByteBuffer()
            case .setFrameSize:
                let request = try MirrorHandleValue.decode(payload: frame.payload)
                guard (UInt64(MirrorLimits.minimumFrameSize)...UInt64(MirrorLimits.maximumFrameSize)).contains(request.value)
                else {
                    throw MirrorRemoteError(
                        .invalidArgument,
                        "a frame size must be \(MirrorLimits.minimumFrameSize) to \(MirrorLimits.maximumFrameSize) bytes, not \(request.value)")
                }
                reply = ByteBuffer()
            case .status:
                reply = try await executor.run { self.status() }.payload
            case .targetChanges:
                let request = try MirrorHandleValue.decode(payload: frame.payload)
                let volume = try owned(request.handle, connection)
                reply = try await executor.run { try self.changes(volume) }.payload
            case .read:
                let (range, volume) = try ownedFrameRange(frame.payload, connection, "a read")
                let pool = self.pool
                reply = try await executor.run {
                    try self.engine {
                        var buffer = ByteBufferAllocator().buffer(capacity: Int(range.length))
                        try buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: Int(range.length)) { raw in
                            _ = try pool.read(
                                volumeID: volume, offset: range.offset,
                                into: UnsafeMutableRawBufferPointer(rebasing: raw[0..<Int(range.length)]))
                            return Int(range.length)
                        }
                        return buffer
                    }
                }
            case .checksum:
                let (range, volume) = try ownedFrameRange(frame.payload, connection, "a checksum")
                let pool = self.pool
                let digest = try await executor.run {
                    try self.engine { try ExtentDigest.compute(pool: pool, volumeID: volume, offset: range.offset, length: range.length) }
                }
                reply = ByteBuffer(bytes: digest)
            default:
                throw MirrorRemoteError(.protocolViolation, "unknown command \(frame.command.rawValue)")
            }
            return frame.reply(reply)
        } catch let error as MirrorRemoteError {
            return frame.errorReply(error)
        } catch let error as MirrorPayloadError {
            return frame.errorReply(MirrorRemoteError(.protocolViolation, "malformed \(frame.command) frame: \(error)"))
        } catch {
            return frame.errorReply(Self.remote(error))
        }
    }

    /// A data frame (write, write-zeroes, trim) checked against the connection's volumes and ready to
    /// apply on an I/O thread.
    struct DataWork: Sendable {
        /// The request's header fields, to answer with.
        let request: MirrorFrame
        /// Bytes the frame writes (a write's data length; 0 for ranges).
        let bytes: Int
        let fua: Bool
        let apply: @Sendable () throws -> Void
    }

    /// What a data frame becomes before any I/O.
    enum DataFrame: Sendable {
        case ready(DataWork)
        /// Refused before touching the volume (malformed, or a handle this connection does not mirror).
        case refused(MirrorFrame)
    }

    /// Data frames straight onto an I/O thread, without a task: nil for any other command (`handle`
    /// answers it). Same checks, engine calls and typed refusals as `handle`.
    func prepareData(_ frame: MirrorFrame, connection: ObjectIdentifier) -> DataFrame? {
        let command = frame.command
        guard command == .write || command == .writeZeroes || command == .trim else { return nil }
        do {
            return .ready(try dataWork(frame, connection: connection))
        } catch let error as MirrorRemoteError {
            return .refused(frame.errorReply(error))
        } catch let error as MirrorPayloadError {
            return .refused(frame.errorReply(MirrorRemoteError(.protocolViolation, "malformed \(frame.command) frame: \(error)")))
        } catch {
            return .refused(frame.errorReply(Self.remote(error)))
        }
    }

    /// A write, write-zeroes or trim frame decoded and checked against the connection's volumes: the one
    /// place both `handle` and `prepareData` turn a data frame into engine calls.
    private func dataWork(_ frame: MirrorFrame, connection: ObjectIdentifier) throws -> DataWork {
        let command = frame.command
        let fua = frame.flags.contains(.fua)
        let punch = frame.flags.contains(.punch)
        let request = MirrorFrame(command: frame.command, flags: frame.flags, messageID: frame.messageID)
        if command == .write {
            let (header, data) = try MirrorWriteHeader.split(frame.payload)
            let volume = try owned(header.handle, connection)
            return DataWork(request: request, bytes: data.readableBytes, fua: fua) {
                try data.withUnsafeReadableBytes { bytes in
                    try self.pool.write(volumeID: volume, offset: header.offset, source: .bytes(bytes), fua: fua)
                }
            }
        }
        let range = try MirrorRange.decode(payload: frame.payload)
        let volume = try owned(range.handle, connection)
        return DataWork(request: request, bytes: 0, fua: fua) {
            if command == .trim {
                try self.pool.discard(volumeID: volume, offset: range.offset, length: range.length, mode: .trim, fua: fua)
            } else if punch {
                try self.pool.discard(volumeID: volume, offset: range.offset, length: range.length, mode: .zero, fua: fua)
            } else {
                try self.pool.write(volumeID: volume, offset: range.offset, source: .zeros(length: range.length), fua: fua)
            }
        }
    }

    /// Applies `batch` in order as one I/O-thread job and answers all of it with one hop back to
    /// `eventLoop`: the replies, in the same order.
    ///
    /// Measured (bench/mirror.py randwrite-4k-qd32, perf on the target): with one job per 4 KiB frame,
    /// every frame woke an I/O thread and every completion woke the event loop, and context switches
    /// (futex waits, finish_task_switch) were the largest cost when the target shares its cores with the
    /// primary and the host. The handler batches the small frames of one socket read.
    func applyData(_ batch: [DataWork], eventLoop: any EventLoop) -> EventLoopFuture<[MirrorFrame]> {
        let promise = eventLoop.makePromise(of: [MirrorFrame].self)
        do {
            try executor.submit {
                promise.succeed(batch.map { work in
                    do {
                        try self.engine(work.apply)
                        return work.request.reply()
                    } catch let error as MirrorRemoteError {
                        return work.request.errorReply(error)
                    } catch {
                        return work.request.errorReply(Self.remote(error))
                    }
                })
            }
        } catch {
            promise.succeed(batch.map { $0.request.errorReply(Self.remote(error)) })
        }
        return promise.futureResult
    }

    /// The range of a read or checksum request, on a volume this connection mirrors. At most one frame
    /// long: a read's answer travels in one frame, and a checksum reads as much as a read would.
    private func ownedFrameRange(
        _ payload: ByteBuffer, _ connection: ObjectIdentifier, _ what: String
    ) throws -> (range: MirrorRange, volume: UInt64) {
        let range = try MirrorRange.decode(payload: payload)
        let volume = try owned(range.handle, connection)
        guard range.length <= UInt64(MirrorLimits.maximumFrameSize) else {
            throw MirrorRemoteError(.invalidArgument, "\(what) covers at most \(MirrorLimits.maximumFrameSize) bytes")
        }
        return (range, volume)
    }

    /// The volume a data frame's handle names, if this connection mirrors it.
    private func owned(_ handle: UInt64, _ connection: ObjectIdentifier) throws -> UInt64 {
        let (owner, record) = state.withLock { ($0.owners[handle], $0.records[handle]) }
        guard owner == connection else {
            if record?.promoted == true {
                throw MirrorRemoteError(
                    .targetChanged,
                    "the target volume was promoted (failover) and no longer takes the primary's writes; re-establish with --take-target-changes or --discard-target-changes")
            }
            throw MirrorRemoteError(.badAddress, "handle \(handle) names no volume this connection mirrors")
        }
        return handle
    }

    /// Runs an engine call, mapping its errors to the protocol's typed errors.
    private func engine<T>(_ body: () throws -> T) throws -> T {
        do { return try body() } catch { throw Self.remote(error) }
    }

    static func remote(_ error: any Error) -> MirrorRemoteError {
        if let error = error as? MirrorRemoteError { return error }
        if let error = error as? ReplicationError { return MirrorRemoteError(.targetFailed, error.message) }
        guard let error = error as? EngineError else {
            return MirrorRemoteError(.targetFailed, "\(error)")
        }
        switch error.code {
        case .notFound: return MirrorRemoteError(.unknownVolume, error.message)
        case .outOfRange: return MirrorRemoteError(.badAddress, error.message)
        case .noSpace: return MirrorRemoteError(.noSpace, error.message)
        case .busy, .alreadyExists: return MirrorRemoteError(.volumeInUse, error.message)
        case .invalidArgument: return MirrorRemoteError(.invalidArgument, error.message)
        case .closed: return MirrorRemoteError(.shuttingDown, error.message)
        default: return MirrorRemoteError(.targetFailed, error.message)
        }
    }
}
