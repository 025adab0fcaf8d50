import CairnIO
import Foundation
import Logging
import Synchronization

/// Clone groups (docs/ARCHITECTURE.md, "Clone groups"): a source volume and its full clones, kept
/// synchronized, fractured, synchronized again, reverse-synced or restored with copy-on-demand. Reached as
/// `pool.cloneGroups`.
///
/// Its state is `PoolState.cloneGroups` (guarded by the pool's one mutex); every change of a clone's state
/// goes through the group's `CloneGroupMachine`: this service feeds it events under the mutex and carries
/// its actions out. The core calls used here: `monitor`, `state` (volumes by name and id), `checkWritable`,
/// `flush`, `createVolume`/`deleteVolume`, `withEpochBarrier`, `jobs`, `copyRange`, and for the restore
/// map's own commit `mapCommitSerial`, `metadata` and `failStop`. The core calls back: the host data path
/// before I/O on a member (`CloneGroups+IO`), the group commit (`CloneGroups+Commit`), and open.
public final class CloneGroups: @unchecked Sendable {
    // @unchecked: the groups live in the pool's `state`, touched only with the pool's monitor held.
    unowned let pool: Pool
    /// Some volume is (or was, since open) in a clone group: host I/O must ask this service first.
    let inUse = Atomic<Bool>(false)

    /// Bytes per delta-map bit unless `clone add --extent-size` says otherwise: a 4 KiB host read during a
    /// protected restore copies at most this much first, and a 1 TiB source costs 2 MiB of map per clone.
    /// 64 KiB, one default chunk: with 256 KiB, 4 KiB random I/O during a 4 GiB restore ran at 0.24
    /// (reads) and 0.18 (writes) of its rate without one, with 64 KiB at 0.40 and 0.24
    /// (bench/clone-restore.sh, docs/BENCHMARKS.md); full syncs took the same time.
    public static let defaultExtentSize: UInt64 = 64 << 10
    /// Extent sizes: a sub-block at least (the unit of allocation), and at most what one copy buffers.
    public static let extentSizes: ClosedRange<UInt64> = 4096...(64 << 20)

    typealias Action = CloneGroupMachine.Action

    init(pool: Pool) { self.pool = pool }

    var monitor: Monitor { pool.monitor }
    var logger: Logger { pool.logger }
    /// The groups (monitor held).
    var table: CloneGroupTable {
        _read { yield pool.state.cloneGroups }
        _modify { yield &pool.state.cloneGroups }
    }

    /// Creates clone `name` of `source` (a new volume of the same size and chunk size) and starts its full
    /// synchronization in the background; host writes to the source are mirrored to it from now on.
    /// Returns the clone and the sync job.
    ///
    /// `pool`: clones live in the pool of their source. Cairn serves one pool per daemon, and its stores
    /// hold only preserved snapshot data, so naming any other pool is refused.
    public func add(source: String, name: String, extentSize: UInt64? = nil, pool poolName: String? = nil) throws
        -> (clone: CloneInfo, job: UInt64)
    {
        if let poolName, poolName != pool.media.location, poolName != pool.poolID {
            throw EngineError(
                .invalidArgument,
                "a clone lives in the pool of its source: this daemon serves one pool (\(pool.media.location)), and "
                    + "stores hold only preserved snapshot data, so --pool '\(poolName)' is not supported")
        }
        if let extentSize, !Self.extentSizes.contains(extentSize) || extentSize & (extentSize - 1) != 0 {
            throw EngineError(
                .invalidArgument, "the extent size must be a power of two from 4 KiB to 64 MiB, not \(extentSize) bytes")
        }
        try NameRules.validate(name)
        let sourceVolume = try monitor.withLock { () throws -> (size: UInt64, chunkSize: UInt32) in
            try pool.checkWritable()
            let id = try pool.state.volumeID(named: source)
            // The clone's volume does not exist yet: any id outside the group asks only for the refusals.
            let event = CloneGroupMachine.Event.add(clone: .max, of: id, extentSize: extentSize)
            if let refusal = machine(adding: id, extentSize: extentSize).refusal(of: event) {
                throw refusal.error(naming: volumeName)
            }
            let volume = pool.state.volumes[id]!
            return (volume.record.size, volume.record.chunkSize)
        }
        guard (try? pool.volumes.id(named: name)) == nil else {
            throw EngineError(.alreadyExists, "volume '\(name)' already exists")
        }
        try pool.volumes.create(name: name, size: sourceVolume.size, chunkSize: sourceVolume.chunkSize)
        let joined: (sourceID: UInt64, later: [Action])
        do {
            joined = try join(source: source, clone: name, sourceSize: sourceVolume.size, extentSize: extentSize)
        } catch {
            try? pool.volumes.delete(name: name)  // nothing half-done: the new volume goes again
            throw error
        }
        let job = try finish(joined.later, sourceID: joined.sourceID).jobs[0]
        logger.info("clone added", metadata: ["source": "\(source)", "clone": "\(name)"])
        return (try info(named: name), job)
    }

    /// The machine of the group `volumeID` is in, or of a new group with `volumeID` as its source.
    private func machine(adding volumeID: UInt64, extentSize: UInt64?) -> CloneGroupMachine {
        table.group(containing: volumeID)?.machine
            ?? CloneGroupMachine(sourceID: volumeID, extentSize: extentSize ?? Self.defaultExtentSize)
    }

    /// Makes the new volume `clone` a synchronizing member of the group of `source`.
    private func join(source: String, clone name: String, sourceSize: UInt64, extentSize: UInt64?) throws
        -> (sourceID: UInt64, later: [Action])
    {
        try monitor.withLock { () throws -> (sourceID: UInt64, later: [Action]) in
            let sourceID = try pool.state.volumeID(named: source)
            let cloneID = try pool.state.volumeID(named: name)
            let sourceState = pool.state.volumes[sourceID]!
            guard sourceState.record.size == sourceSize else {
                throw EngineError(.busy, "'\(source)' was resized meanwhile; try again")
            }
            let group =
                table.group(containing: sourceID)
                ?? CloneGroupState(
                    machine: CloneGroupMachine(sourceID: sourceID, extentSize: extentSize ?? Self.defaultExtentSize),
                    volumeSize: sourceSize)
            // The same short barrier as a snapshot: writes to the source already in flight finish before the
            // member exists, and new ones wait until it does. A write that started before the join and landed
            // after the first sync copied its extent would otherwise be neither mirrored nor copied.
            let later = try pool.withEpochBarrier(sourceState) {
                try apply(.add(clone: cloneID, of: sourceID, extentSize: extentSize), to: group)
            }
            return (sourceID, later)
        }
    }

    /// The clones of one source, or of every group.
    public func list(source: String? = nil) throws -> [CloneInfo] {
        try monitor.withLock {
            let groups =
                try source.map { [try table.groups[pool.state.volumeID(named: $0)]].compactMap { $0 } }
                ?? Array(table.groups.values)
            return groups.flatMap { group in group.members.values.map { info(of: $0, in: group) } }
                .sorted { ($0.source, $0.name) < ($1.source, $1.name) }
        }
    }

    /// One clone, as management commands show it.
    public func info(named name: String) throws -> CloneInfo {
        try monitor.withLock {
            let (group, member) = try member(named: name)
            return info(of: member, in: group)
        }
    }

    /// Takes a clone out of its group; it stays as an ordinary volume unless `deleteVolume`.
    public func remove(named name: String, deleteVolume: Bool = false) throws {
        let (sourceID, later) = try monitor.withLock { () throws -> (UInt64, [Action]) in
            try pool.checkWritable()
            let (group, member) = try member(named: name)
            let event = CloneGroupMachine.Event.remove(clone: member.id, runningJob: runningJob(on: member))
            if let refusal = group.machine.refusal(of: event) { throw refusal.error(naming: volumeName) }
            return (group.sourceID, try withWriteBarrier(group) { try apply(event, to: group) })
        }
        _ = try finish(later, sourceID: sourceID)
        logger.info("clone removed", metadata: ["clone": "\(name)"])
        if deleteVolume { try pool.volumes.delete(name: name) }
    }

    /// Stops mirroring: the clone becomes a point-in-time copy of the source as of this call (writes
    /// acknowledged before it are in the clone, none after). From now on its delta map records every
    /// extent either side changes.
    @discardableResult
    public func fracture(named name: String) throws -> CloneInfo {
        let (sourceID, later) = try monitor.withLock { () throws -> (UInt64, [Action]) in
            try pool.checkWritable()
            let (group, member) = try member(named: name)
            let event = CloneGroupMachine.Event.fracture(clone: member.id, deltaExtents: member.delta.setCount)
            if let refusal = group.machine.refusal(of: event) { throw refusal.error(naming: volumeName) }
            return (group.sourceID, try withWriteBarrier(group) { try apply(event, to: group) })
        }
        _ = try finish(later, sourceID: sourceID)
        logger.info("clone fractured", metadata: ["clone": "\(name)"])
        return try info(named: name)
    }

    /// Brings a fractured clone up to date with its source, copying only its delta map's extents.
    /// Resumes an interrupted (cancelled) sync too.
    public func sync(named name: String) throws -> UInt64 { try start(.sync, clone: name) }

    /// Regular reverse sync: updates the source from a fractured clone. During it host writes to the
    /// source are mirrored to the clone and host reads are served from the clone.
    public func reverseSync(named name: String) throws -> UInt64 { try start(.reverseSync, clone: name) }

    /// Protected restore from a fractured clone: the clone is never modified, host I/O to the source
    /// continues at once through copy-on-demand, and host writes made meanwhile end up in the clone's new
    /// delta map. `protected` must be true: the unprotected kind is `reverseSync`.
    public func restore(named name: String, protected: Bool) throws -> UInt64 {
        guard protected else {
            throw EngineError(
                .invalidArgument,
                "only the protected restore is a restore here (the clone stays unchanged): pass --protected, or use "
                    + "`cairn clone reverse-sync \(name)` to update the source and mirror its writes to the clone")
        }
        return try start(.protectedRestore, clone: name)
    }

    /// Starts (or resumes) `job` on clone `name`: the machine's guards, then the state change, committed,
    /// then the job. A restore into the source goes round twice: first every other clone's delta map is
    /// made to cover the restoring clone's, durably, then the state changes if that still holds.
    private func start(_ job: CloneGroupMachine.Job, clone name: String) throws -> UInt64 {
        var coverCommitted = false
        while true {
            let (sourceID, later) = try monitor.withLock { () throws -> (UInt64, [Action]) in
                try pool.checkWritable()
                let (group, member) = try member(named: name)
                let facts = CloneGroupMachine.Facts(
                    runningJob: runningJob(on: member), deltaExtents: member.delta.setCount,
                    othersCoverDelta: coverCommitted && othersCover(member, in: group))
                return (group.sourceID, try apply(.start(job, clone: member.id, facts: facts), to: group))
            }
            let outcome = try finish(later, sourceID: sourceID)
            if outcome.retry {
                coverCommitted = true
                continue
            }
            logger.info("clone job starting", metadata: ["clone": "\(name)", "state": "\(job.state.rawValue)"])
            return outcome.jobs[0]
        }
    }

    /// Whether every other clone's delta map holds `member`'s (monitor held).
    private func othersCover(_ member: CloneMember, in group: CloneGroupState) -> Bool {
        group.members.values.allSatisfy { other in
            guard other !== member else { return true }
            var covered = other.delta
            covered.formUnion(member.delta)
            return covered == other.delta
        }
    }

    // MARK: - Carrying out the machine's actions

    /// Feeds `event` to `group`'s machine and carries out the actions that happen under the lock
    /// (monitor held); returns the rest (commits, retries, jobs) for `finish`. A refusal throws its error.
    func apply(_ event: CloneGroupMachine.Event, to group: CloneGroupState) throws -> [Action] {
        switch group.machine.handle(event) {
        case .refused(let refusal):
            throw refusal.error(naming: volumeName)
        case .accepted(let actions):
            var later: [Action] = []
            for action in actions where !group.perform(action) {
                switch action {
                case .createMember(let clone):
                    let source = pool.state.volumes[group.sourceID]!
                    group.members[clone] = CloneMember(
                        id: clone, createdAt: Pool.now(), extentCount: group.extentCount,
                        delta: initialDelta(of: source, group: group))
                    table.groups[group.sourceID] = group
                    table.sourceOfClone[clone] = group.sourceID
                    inUse.store(true, ordering: .relaxed)
                case .forgetMember(let clone):
                    group.members[clone] = nil
                    table.sourceOfClone[clone] = nil
                case .deleteGroup:
                    table.groups[group.sourceID] = nil
                    table.deleted.insert(group.sourceID)
                default:
                    later.append(action)
                }
            }
            return later
        }
    }

    /// Carries out what the machine asked for after the lock, in order: commits and jobs. Returns whether
    /// the event must be fed again, and the jobs started.
    func finish(_ actions: [Action], sourceID: UInt64) throws -> (retry: Bool, jobs: [UInt64]) {
        monitor.broadcast()
        var retry = false
        var jobs: [UInt64] = []
        for action in actions {
            switch action {
            case .commit: try pool.flush()
            case .retry: retry = true
            case .startJob(let clone): jobs.append(startJob(sourceID: sourceID, cloneID: clone))
            default: assertionFailure("\(action) is carried out under the lock")
            }
        }
        return (retry, jobs)
    }

    // MARK: - Volume guards (monitor held)

    /// Refuses management operations that would change a group member behind its delta maps' back.
    func refuse(_ change: CloneGroupMachine.VolumeChange, of volumeID: UInt64) throws {
        guard let group = table.group(containing: volumeID) else { return }
        if let refusal = group.machine.refusal(of: .change(volume: volumeID, change)) {
            throw refusal.error(naming: volumeName)
        }
    }

    // MARK: - Helpers (monitor held)

    func member(named name: String) throws -> (CloneGroupState, CloneMember) {
        let id = try pool.state.volumeID(named: name)
        guard let source = table.sourceOfClone[id], let group = table.groups[source], let member = group.members[id]
        else {
            throw CloneGroupRefusal.notAClone(id).error(naming: volumeName)
        }
        return (group, member)
    }

    func volumeName(_ id: UInt64) -> String { pool.state.volumes[id]?.record.name ?? "volume \(id)" }

    private func runningJob(on member: CloneMember) -> CloneGroupMachine.RunningJob? {
        guard let job = member.job, let info = pool.jobs.job(job), info.state == .running else { return nil }
        return CloneGroupMachine.RunningJob(id: job, kind: info.kind)
    }

    /// Holds new writes to the group and waits for those in flight, then runs `body` (monitor held).
    private func withWriteBarrier<T>(_ group: CloneGroupState, _ body: () throws -> T) rethrows -> T {
        while group.barrier { monitor.wait() }
        group.barrier = true
        defer { group.barrier = false }
        while group.writesInFlight > 0 { monitor.wait() }
        return try body()
    }

    /// What a new clone must copy: every extent the source has data in (a thin source's holes already
    /// match an empty clone). A source that falls through to a parent copies everything.
    private func initialDelta(of source: VolumeState, group: CloneGroupState) -> ExtentMap {
        guard source.record.parent == nil else { return ExtentMap(count: group.extentCount, filled: true) }
        var delta = ExtentMap(count: group.extentCount)
        let chunkSize = UInt64(source.geometry.chunkSize)
        for chunk in source.present.chunks(in: 0..<UInt64.max) {
            let start = chunk * chunkSize
            guard start < source.record.size else { continue }
            let end = min(start + chunkSize, source.record.size)
            for extent in group.extents(offset: start, length: end - start) { delta.insert(extent) }
        }
        return delta
    }

    func info(of member: CloneMember, in group: CloneGroupState) -> CloneInfo {
        let state = group.state(of: member)
        return CloneInfo(
            name: volumeName(member.id), source: volumeName(group.sourceID), state: state,
            extentSize: group.extentSize, extentCount: group.extentCount, deltaExtents: member.delta.setCount,
            restoreMapExtents: state == .restoring ? group.restoreMap?.setCount : nil, job: member.job,
            createdAt: member.createdAt)
    }
}
