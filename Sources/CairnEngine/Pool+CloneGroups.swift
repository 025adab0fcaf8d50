import CairnIO
import Foundation
import Logging
import Synchronization

extension Pool {
    /// Bytes per delta-map bit unless `clone add --extent-size` says otherwise: a 4 KiB host read during a
    /// protected restore copies at most this much first, and a 1 TiB source costs 2 MiB of map per clone.
    /// 64 KiB, one default chunk: with 256 KiB, 4 KiB random I/O during a 4 GiB restore ran at 0.24
    /// (reads) and 0.18 (writes) of its rate without one, with 64 KiB at 0.40 and 0.24
    /// (bench/clone-restore.sh, docs/BENCHMARKS.md); full syncs took the same time.
    public static let defaultCloneExtentSize: UInt64 = 64 << 10
    /// Extent sizes: a sub-block at least (the unit of allocation), and at most what one copy buffers.
    public static let cloneExtentSizes: ClosedRange<UInt64> = 4096...(64 << 20)

    /// Creates clone `name` of `source` (a new volume of the same size and chunk size) and starts its full
    /// synchronization in the background; host writes to the source are mirrored to it from now on.
    /// Returns the clone and the sync job.
    ///
    /// `pool`: clones live in the pool of their source. Cairn serves one pool per daemon, and its stores
    /// hold only preserved snapshot data, so naming any other pool is refused.
    public func addClone(source: String, name: String, extentSize: UInt64? = nil, pool: String? = nil) throws
        -> (clone: CloneInfo, job: UInt64)
    {
        if let pool, pool != media.location, pool != poolID {
            throw EngineError(
                .invalidArgument,
                "a clone lives in the pool of its source: this daemon serves one pool (\(media.location)), and stores "
                    + "hold only preserved snapshot data, so --pool '\(pool)' is not supported")
        }
        if let extentSize, !Self.cloneExtentSizes.contains(extentSize) || extentSize & (extentSize - 1) != 0 {
            throw EngineError(
                .invalidArgument, "the extent size must be a power of two from 4 KiB to 64 MiB, not \(extentSize) bytes")
        }
        try NameRules.validate(name)
        let sourceVolume = try monitor.withLock { () throws -> (size: UInt64, chunkSize: UInt32) in
            try checkWritable()
            let id = try state.volumeID(named: source)
            if state.cloneGroups.sourceOfClone[id] != nil {
                throw EngineError(
                    .busy, "'\(source)' is itself a clone; clone its source, or remove it from its group first")
            }
            if let group = state.cloneGroups.groups[id] {
                if let extentSize, extentSize != group.extentSize {
                    throw EngineError(
                        .invalidArgument,
                        "the clone group of '\(source)' uses \(group.extentSize)-byte extents; omit --extent-size or use that")
                }
                if let restoring = group.restoringMember {
                    throw EngineError(
                        .busy,
                        "'\(source)' is being restored from '\(volumeName(restoring.id))'; add clones once it finishes")
                }
            }
            let volume = state.volumes[id]!
            return (volume.record.size, volume.record.chunkSize)
        }
        guard (try? volumes.id(named: name)) == nil else {
            throw EngineError(.alreadyExists, "volume '\(name)' already exists")
        }
        try volumes.create(name: name, size: sourceVolume.size, chunkSize: sourceVolume.chunkSize)
        let ids: (source: UInt64, clone: UInt64)
        do {
            ids = try joinGroup(source: source, clone: name, sourceVolume: sourceVolume, extentSize: extentSize)
        } catch {
            try? volumes.delete(name: name)  // nothing half-done: the new volume goes again
            throw error
        }
        try flush()
        let job = startCloneJob(sourceID: ids.source, cloneID: ids.clone)
        logger.info("clone added", metadata: ["source": "\(source)", "clone": "\(name)"])
        return (try cloneInfo(named: name), job)
    }

    /// Makes the new volume `clone` a synchronizing member of the group of `source`.
    private func joinGroup(
        source: String, clone name: String, sourceVolume: (size: UInt64, chunkSize: UInt32), extentSize: UInt64?
    ) throws -> (source: UInt64, clone: UInt64) {
        try monitor.withLock { () throws -> (source: UInt64, clone: UInt64) in
            let sourceID = try state.volumeID(named: source)
            let cloneID = try state.volumeID(named: name)
            let sourceState = state.volumes[sourceID]!
            guard sourceState.record.size == sourceVolume.size else {
                throw EngineError(.busy, "'\(source)' was resized meanwhile; try again")
            }
            let group =
                state.cloneGroups.groups[sourceID]
                ?? CloneGroupState(
                    sourceID: sourceID, extentSize: extentSize ?? Self.defaultCloneExtentSize,
                    volumeSize: sourceVolume.size)
            // The same short barrier as a snapshot: writes to the source already in flight finish before the
            // member exists, and new ones wait until it does. A write that started before the join and landed
            // after the first sync copied its extent would otherwise be neither mirrored nor copied.
            return withEpochBarrier(sourceState) {
                let member = CloneMember(
                    record: CloneRecord(volumeID: cloneID, state: .synchronizing, createdAt: Self.now()),
                    extentCount: group.extentCount, delta: initialDelta(of: sourceState, group: group))
                group.members[cloneID] = member
                group.recordDirty = true
                group.persistentDelta.markAllDirty()
                state.cloneGroups.groups[sourceID] = group
                state.cloneGroups.sourceOfClone[cloneID] = sourceID
                cloneGroupsInUse.store(true, ordering: .relaxed)
                return (sourceID, cloneID)
            }
        }
    }

    /// The clones of one source, or of every group.
    public func listClones(source: String? = nil) throws -> [CloneInfo] {
        try monitor.withLock {
            let groups = try source.map { [try state.cloneGroups.groups[state.volumeID(named: $0)]].compactMap { $0 } }
                ?? Array(state.cloneGroups.groups.values)
            return groups.flatMap { group in group.members.values.map { info(of: $0, in: group) } }
                .sorted { ($0.source, $0.name) < ($1.source, $1.name) }
        }
    }

    public func cloneInfo(named name: String) throws -> CloneInfo {
        try monitor.withLock {
            let (group, member) = try cloneMember(named: name)
            return info(of: member, in: group)
        }
    }

    /// Takes a clone out of its group; it stays as an ordinary volume unless `deleteVolume`.
    public func removeClone(named name: String, deleteVolume: Bool = false) throws {
        try monitor.withLock {
            try checkWritable()
            let (group, member) = try cloneMember(named: name)
            try refuseWhileJobRuns(member, name: name)
            if member.state == .restoring || member.state == .reverseSyncing {
                throw EngineError(
                    .busy,
                    "'\(name)' is being restored into '\(volumeName(group.sourceID))', which reads through it until "
                        + "the restore finishes; resume it (`cairn clone \(member.state == .restoring ? "restore \(name) --protected" : "reverse-sync \(name)")`)")
            }
            withWriteBarrier(group) {
                group.members[member.id] = nil
                state.cloneGroups.sourceOfClone[member.id] = nil
                if group.members.isEmpty {
                    state.cloneGroups.groups[group.sourceID] = nil
                    state.cloneGroups.deleted.insert(group.sourceID)
                } else {
                    group.recordDirty = true
                    group.persistentDelta.markAllDirty()
                }
            }
        }
        monitor.broadcast()
        try flush()
        logger.info("clone removed", metadata: ["clone": "\(name)"])
        if deleteVolume { try volumes.delete(name: name) }
    }

    /// Stops mirroring: the clone becomes a point-in-time copy of the source as of this call (writes
    /// acknowledged before it are in the clone, none after). From now on its delta map records every
    /// extent either side changes.
    @discardableResult
    public func fractureClone(named name: String) throws -> CloneInfo {
        try monitor.withLock {
            try checkWritable()
            let (group, member) = try cloneMember(named: name)
            guard member.state == .synchronized else {
                if member.state == .fractured { throw EngineError(.busy, "'\(name)' is already fractured") }
                throw EngineError(.busy, refusal(member, name: name, to: "fracture"))
            }
            withWriteBarrier(group) {
                member.record.state = .fractured
                for extent in member.activity.members { group.persistentDelta.markDirty(extent) }
                member.activity = ExtentMap(count: group.extentCount)
                member.activityUse = [:]
                group.recordDirty = true
            }
        }
        monitor.broadcast()
        // The commit syncs the clone's data before it records the fracture.
        try flush()
        logger.info("clone fractured", metadata: ["clone": "\(name)"])
        return try cloneInfo(named: name)
    }

    /// Brings a fractured clone up to date with its source, copying only its delta map's extents.
    /// Resumes an interrupted (cancelled) sync too.
    public func syncClone(named name: String) throws -> UInt64 {
        try startTransition(name, to: .synchronizing, from: [.fractured, .synchronizing], verb: "sync")
    }

    /// Regular reverse sync: updates the source from a fractured clone. During it host writes to the
    /// source are mirrored to the clone and host reads are served from the clone.
    public func reverseSyncClone(named name: String) throws -> UInt64 {
        try startTransition(name, to: .reverseSyncing, from: [.fractured, .reverseSyncing], verb: "reverse-sync")
    }

    /// Seed 003's protected restore from a fractured clone: the clone is never modified, host I/O to the
    /// source continues at once through copy-on-demand, and host writes made meanwhile end up in the
    /// clone's new delta map. `protected` must be true: the unprotected kind is `reverseSyncClone`.
    public func restoreClone(named name: String, protected: Bool) throws -> UInt64 {
        guard protected else {
            throw EngineError(
                .invalidArgument,
                "only the protected restore is a restore here (the clone stays unchanged): pass --protected, or use "
                    + "`cairn clone reverse-sync \(name)` to update the source and mirror its writes to the clone")
        }
        return try startTransition(name, to: .restoring, from: [.fractured, .restoring], verb: "restore from")
    }

    /// Guards and performs the state change that starts a job, commits it, then starts the job.
    ///
    /// A restore into the source (reverse sync or protected restore) first makes every other clone's
    /// delta map cover the restoring clone's extents, durably: from the moment the state changes, a COD
    /// may change the source there, and a crash must not leave another clone unaware of it.
    private func startTransition(_ name: String, to target: CloneState, from allowed: Set<CloneState>, verb: String)
        throws -> UInt64
    {
        let restoresSource = target == .restoring || target == .reverseSyncing
        while true {
            if restoresSource {
                try monitor.withLock {
                    let (group, member) = try checkTransition(name, to: target, from: allowed, verb: verb)
                    guard member.state != target else { return }
                    for other in group.members.values where other !== member { other.delta.formUnion(member.delta) }
                    group.persistentDelta.markAllDirty()
                }
                try flush()
            }
            let ids = try monitor.withLock { () throws -> (UInt64, UInt64)? in
                let (group, member) = try checkTransition(name, to: target, from: allowed, verb: verb)
                let resuming = member.state == target
                if restoresSource && !resuming {
                    for other in group.members.values where other !== member {
                        var covered = other.delta
                        covered.formUnion(member.delta)
                        if covered != other.delta { return nil }  // the clone changed meanwhile: again
                    }
                }
                if target == .restoring && !resuming {
                    group.restoreMap = ExtentMap(count: group.extentCount)
                    group.persistentRestoreMap.markAllDirty()
                }
                member.record.state = target
                group.recordDirty = true
                return (group.sourceID, member.id)
            }
            guard let ids else { continue }
            monitor.broadcast()
            try flush()
            logger.info("clone job starting", metadata: ["clone": "\(name)", "state": "\(target.rawValue)"])
            return startCloneJob(sourceID: ids.0, cloneID: ids.1)
        }
    }

    /// The guards of `startTransition` (monitor held).
    private func checkTransition(_ name: String, to target: CloneState, from allowed: Set<CloneState>, verb: String)
        throws -> (CloneGroupState, CloneMember)
    {
        try checkWritable()
        let (group, member) = try cloneMember(named: name)
        try refuseWhileJobRuns(member, name: name)
        guard allowed.contains(member.state) else {
            if target == .synchronizing && member.state == .synchronized {
                throw EngineError(.busy, "'\(name)' is already synchronized with its source")
            }
            throw EngineError(.busy, refusal(member, name: name, to: verb))
        }
        if let restoring = group.restoringMember, restoring !== member {
            throw EngineError(
                .busy,
                "'\(volumeName(group.sourceID))' is being restored from '\(volumeName(restoring.id))'; "
                    + "a source takes one restore at a time, and no sync while it runs")
        }
        if target == .restoring || target == .reverseSyncing,
            let mirrored = group.members.values.first(where: { $0 !== member && $0.isMirrored })
        {
            throw EngineError(
                .busy,
                "'\(volumeName(mirrored.id))' is \(mirrored.state.rawValue) with '\(volumeName(group.sourceID))'; "
                    + "fracture it first so that the restore does not change it too")
        }
        return (group, member)
    }

    // MARK: - Volume guards (monitor held)

    /// Refuses management operations that would change a group member behind its delta maps' back.
    func checkNotInCloneGroup(_ volumeID: UInt64, doing action: String) throws {
        if let group = state.cloneGroups.groups[volumeID] {
            let clones = group.members.keys.map { volumeName($0) }.sorted().joined(separator: ", ")
            throw EngineError(
                .busy,
                "'\(volumeName(volumeID))' is the source of clone(s) \(clones); \(action) would break their delta maps. "
                    + "Remove the clones first (`cairn clone remove`)")
        }
        if state.cloneGroups.sourceOfClone[volumeID] != nil {
            throw EngineError(
                .busy,
                "'\(volumeName(volumeID))' is a clone in a clone group; remove it from the group first "
                    + "(`cairn clone remove \(volumeName(volumeID))`)")
        }
    }

    // MARK: - Helpers (monitor held)

    func cloneMember(named name: String) throws -> (CloneGroupState, CloneMember) {
        let id = try state.volumeID(named: name)
        guard let source = state.cloneGroups.sourceOfClone[id], let group = state.cloneGroups.groups[source],
            let member = group.members[id]
        else {
            throw EngineError(.notFound, "'\(name)' is not a clone (`cairn clone list` shows the clones)")
        }
        return (group, member)
    }

    func volumeName(_ id: UInt64) -> String { state.volumes[id]?.record.name ?? "volume \(id)" }

    private func refuseWhileJobRuns(_ member: CloneMember, name: String) throws {
        if let job = member.job, let info = jobs.job(job), info.state == .running {
            throw EngineError(
                .busy, "job \(job) (\(info.kind)) is running on '\(name)'; wait for it or cancel it (`cairn job cancel \(job)`)")
        }
    }

    private func refusal(_ member: CloneMember, name: String, to verb: String) -> String {
        switch member.state {
        case .synchronizing:
            return "cannot \(verb) '\(name)': it is still synchronizing (\(member.delta.setCount) extents to copy)"
        case .synchronized:
            return "cannot \(verb) '\(name)': it is synchronized (mirrored) with its source; fracture it first"
        case .fractured:
            return "cannot \(verb) '\(name)': it is fractured; sync it first (`cairn clone sync \(name)`)"
        case .reverseSyncing:
            return "cannot \(verb) '\(name)': a reverse sync from it is in progress"
        case .restoring:
            return "cannot \(verb) '\(name)': a protected restore from it is in progress"
        }
    }

    /// Holds new writes to the group and waits for those in flight, then runs `body` (monitor held).
    private func withWriteBarrier(_ group: CloneGroupState, _ body: () -> Void) {
        while group.barrier { monitor.wait() }
        group.barrier = true
        defer { group.barrier = false }
        while group.writesInFlight > 0 { monitor.wait() }
        body()
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
        CloneInfo(
            name: volumeName(member.id), source: volumeName(group.sourceID), state: member.state,
            extentSize: group.extentSize, extentCount: group.extentCount, deltaExtents: member.delta.setCount,
            restoreMapExtents: member.state == .restoring ? group.restoreMap?.setCount : nil, job: member.job,
            createdAt: member.record.createdAt)
    }
}
