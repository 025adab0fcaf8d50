import CairnEngine
import CairnIO
import Foundation
import Logging
import MirrorProtocol
import NIOCore
import Synchronization

/// A mirror as the management API shows it.
public struct MirrorInfo: Sendable {
    public var volume: String
    public var target: String
    public var state: String
    public var extentSize: UInt64
    public var extentCount: UInt64
    /// Extents the target may lack (dirty or with recent writes).
    public var changedExtents: UInt64
    /// Extents the target certainly lacks: what a resync still has to copy (the lag, in extents).
    public var dirtyExtents: UInt64
    public var frameSize: UInt32
    public var connected: Bool
    public var jobID: UInt64?
    public var lastError: String?
    public var fractures: UInt64
    public var retransmissions: UInt64
    public var bytesReplicated: UInt64
    /// Data bytes per second the target acknowledged recently (over the last checkpoint interval).
    public var throughput: Double
    public var pairID: UInt64
    public var generation: UInt64
    public var syncedGeneration: UInt64
    /// nil: synchronous. Otherwise ASYNCHRONOUS with this many bytes at most unacknowledged by the target.
    public var asynchronousLagLimit: UInt64?
    /// Asynchronous mode: bytes written locally and not yet acknowledged by the target.
    public var unacknowledgedBytes: UInt64
    /// `re-establish --take-target-changes` is under way: extents still to copy from the target.
    public var takingTargetChanges: Bool = false
    public var pullExtents: UInt64 = 0
    /// What the last completed resync did since the daemon started.
    public var lastResync: PrimaryMirror.ResyncResult?
}

/// The daemon's replication layer: the primary mirrors of this pool's volumes, the target service for
/// volumes other daemons mirror here, and the management operations over both.
public final class Replication: Sendable {
    let pool: Pool
    let executor: IOExecutor
    let store: MirrorRecordStore
    let settings: ReplicationSettings
    let logger: Logger
    public let target: MirrorTargetService
    let primaries = Mutex<Routes>(Routes())

    /// The mirrors by volume, and the host writes to unmirrored volumes still in flight: `establish`
    /// waits for those to finish after registering its mirror, so none lands after the initial sync
    /// copied its extent.
    struct Routes {
        var mirrors: [UInt64: PrimaryMirror] = [:]
        var unmirroredWrites: [UInt64: Int] = [:]
        /// `establish` calls waiting for a volume's unmirrored writes to end, by volume and token.
        var drainWaiters: [UInt64: [UInt64: CheckedContinuation<Bool, Never>]] = [:]
        var nextDrainToken: UInt64 = 0
    }
    let checkpoints = Mutex<[UInt64: Task<Void, Never>]>([:])

    public init(pool: Pool, executor: IOExecutor, dataDirectory: String, settings: ReplicationSettings, logger: Logger)
        throws
    {
        self.pool = pool
        self.executor = executor
        self.settings = settings
        self.logger = logger
        store = try MirrorRecordStore(dataDirectory: dataDirectory)
        target = try MirrorTargetService(pool: pool, executor: executor, store: store, logger: logger)
        let known = Set(pool.volumes.list().map(\.id))
        for path in try store.paths(prefix: "primary") {
            var record = try store.load(PrimaryMirrorRecord.self, from: path)
            guard known.contains(record.volumeID) else {
                try? store.remove(path)
                try? store.remove(store.changeMapPath(record.volumeID))
                continue
            }
            let map: ChangeMap
            if record.changeMapLost == true {
                // The map failed before the restart: rebuilt with every extent dirty (a full resync).
                map = try ChangeMap.create(
                    path: store.changeMapPath(record.volumeID), executor: executor, extentSize: record.extentSize,
                    volumeSize: try pool.volumes.size(volumeID: record.volumeID))
                if map.extentCount > 0 { try map.markDirtyDurably(0...(map.extentCount - 1)) }
                record.changeMapLost = nil
                try store.save(record, to: path)
                logger.warning(
                    "mirror change map was lost: every extent will be resynced", metadata: ["volume": "\(record.volumeID)"])
            } else {
                map = try ChangeMap.open(path: store.changeMapPath(record.volumeID), executor: executor)
            }
            let mirror = PrimaryMirror(
                record: record, changeMap: map, pool: pool, executor: executor, store: store, settings: settings,
                logger: logger)
            let pullPath = store.pullMapPath(record.volumeID)
            if FileManager.default.fileExists(atPath: pullPath) {
                // A take-target-changes was under way: it resumes where its pull set says.
                let pull = try ChangeMap.open(path: pullPath, executor: executor)
                mirror.setPullMap(pull)
            }
            primaries.withLock { $0.mirrors[record.volumeID] = mirror }
        }
    }

    /// The mirror of a volume, if it is a mirrored primary (the host write path asks this per request).
    public func primary(volumeID: UInt64) -> PrimaryMirror? { primaries.withLock { $0.mirrors[volumeID] } }

    /// The host write path's question, atomic with `establish`'s registration: the volume's mirror, or
    /// nil after counting the write as an unmirrored one in flight (end it with `unmirroredWriteEnded`).
    public func routeWrite(volumeID: UInt64) -> PrimaryMirror? {
        primaries.withLock { routes in
            if let mirror = routes.mirrors[volumeID] { return mirror }
            routes.unmirroredWrites[volumeID, default: 0] += 1
            return nil
        }
    }

    public func unmirroredWriteEnded(volumeID: UInt64) {
        let drained = primaries.withLock { routes -> [CheckedContinuation<Bool, Never>] in
            if let count = routes.unmirroredWrites[volumeID], count > 1 {
                routes.unmirroredWrites[volumeID] = count - 1
                return []
            }
            routes.unmirroredWrites[volumeID] = nil
            return routes.drainWaiters.removeValue(forKey: volumeID).map { Array($0.values) } ?? []
        }
        for waiter in drained { waiter.resume(returning: true) }
    }

    /// Longest wait for writes that started before a mirror existed (a host write takes milliseconds; a
    /// minute means the I/O is stuck, and establish reports it rather than waiting forever).
    static let unmirroredDrainTimeout: Duration = .seconds(60)

    /// Waits until no write that started before the volume's mirror existed is still in flight: woken by
    /// the last one's end, not by polling. False when `timeout` passed first.
    func drainUnmirroredWrites(volumeID: UInt64, timeout: Duration) async -> Bool {
        let timer = Mutex<Task<Void, Never>?>(nil)
        defer { timer.withLock { $0?.cancel() } }
        return await withCheckedContinuation { (waiter: CheckedContinuation<Bool, Never>) in
            let token = primaries.withLock { routes -> UInt64? in
                guard (routes.unmirroredWrites[volumeID] ?? 0) > 0 else { return nil }
                routes.nextDrainToken += 1
                routes.drainWaiters[volumeID, default: [:]][routes.nextDrainToken] = waiter
                return routes.nextDrainToken
            }
            guard let token else { return waiter.resume(returning: true) }
            timer.withLock {
                $0 = Task { [self] in
                    try? await Task.sleep(for: timeout)
                    let expired = primaries.withLock { $0.drainWaiters[volumeID]?.removeValue(forKey: token) }
                    expired?.resume(returning: false)
                }
            }
        }
    }

    /// Resumes mirrors after a start: a mirror that was linked when the daemon stopped (or crashed)
    /// reconnects and resyncs what its change map holds; fractured and severed ones wait for the operator.
    public func resume() {
        for mirror in primaries.withLock({ Array($0.mirrors.values) }) {
            startCheckpoints(mirror)
            let state = mirror.record.state
            guard state == .mirrored || state == .synchronizing else { continue }
            mirror.changeMap.promoteActive()
            Task {
                do {
                    _ = try await mirror.linkedConnection()
                    mirror.scheduleResync(reason: "the daemon restarted")
                } catch {
                    await mirror.fracture("cannot reach the target after a restart: \(error)")
                }
            }
        }
    }

    func startCheckpoints(_ mirror: PrimaryMirror) {
        let task = Task { await mirror.runCheckpoints() }
        checkpoints.withLock { $0[mirror.volumeID]?.cancel(); $0[mirror.volumeID] = task }
    }

    public func shutdown() {
        for task in checkpoints.withLock({ Array($0.values) }) { task.cancel() }
        for mirror in primaries.withLock({ Array($0.mirrors.values) }) { mirror.shutdown() }
    }

    /// The target side: volumes of this pool paired with a primary elsewhere.
    public func targetPairings() -> [(volume: String, record: TargetMirrorRecord, connected: Bool)] {
        let names = Dictionary(pool.volumes.list().map { ($0.id, $0.name) }, uniquingKeysWith: { a, _ in a })
        return target.records().compactMap { record in
            names[record.volumeID].map { ($0, record, target.isConnected(volumeID: record.volumeID)) }
        }.sorted { $0.volume < $1.volume }
    }

    public func list() -> [MirrorInfo] {
        let names = Dictionary(pool.volumes.list().map { ($0.id, $0.name) }, uniquingKeysWith: { a, _ in a })
        return primaries.withLock { Array($0.mirrors.values) }.compactMap { mirror in
            names[mirror.volumeID].map { Self.info(mirror, name: $0) }
        }.sorted { $0.volume < $1.volume }
    }

    public func info(volume name: String) throws -> MirrorInfo { Self.info(try mirror(named: name), name: name) }

    static func info(_ mirror: PrimaryMirror, name: String) -> MirrorInfo {
        let record = mirror.record
        let counters = mirror.counters
        return MirrorInfo(
            volume: name, target: record.target, state: record.state.rawValue, extentSize: record.extentSize,
            extentCount: mirror.changeMap.extentCount, changedExtents: mirror.changeMap.changedCount,
            dirtyExtents: mirror.changeMap.dirtyCount, frameSize: record.frameSize, connected: counters.connected,
            jobID: counters.jobID, lastError: record.lastError, fractures: counters.fractures,
            retransmissions: counters.retransmissions, bytesReplicated: counters.bytesReplicated,
            throughput: counters.throughput,
            pairID: record.generations.pairID, generation: record.generations.current,
            syncedGeneration: record.generations.synced, asynchronousLagLimit: record.asynchronousLagBytes,
            unacknowledgedBytes: mirror.asynchronousLag?.used ?? 0, takingTargetChanges: record.takingTargetChanges == true,
            pullExtents: mirror.pullMap?.dirtyCount ?? 0, lastResync: mirror.lastResync)
    }

    /// Asynchronous mode's lag bounds: at least one 4 KiB block; at most 4 GiB, since every byte in flight
    /// is held in memory until the target acknowledges it.
    static let minimumAsynchronousLag: UInt64 = 4096
    static let maximumAsynchronousLag: UInt64 = 4 << 30

    func mirror(named name: String) throws -> PrimaryMirror {
        let id = try engine { try pool.volumes.id(named: name) }
        guard let mirror = primary(volumeID: id) else {
            throw ReplicationError(.notFound, "volume '\(name)' is not mirrored (see `cairn mirror list`)")
        }
        return mirror
    }

    func engine<T>(_ body: () throws -> T) throws -> T {
        do { return try body() } catch let error as EngineError { throw ReplicationError.engine(error) }
    }
}
