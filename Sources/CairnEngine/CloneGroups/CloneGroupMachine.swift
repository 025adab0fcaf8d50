/// The states of one clone group's clones and every rule about changing them (docs/ARCHITECTURE.md, "Clone
/// groups"): management operations and the ends of jobs come in as events; what the service must do comes
/// out as actions, or a refusal saying why nothing changed. Pure: no I/O, no locks, no maps. The service
/// (`CloneGroups`) feeds it under the pool mutex, carries the actions out and tells it what it saw
/// (`Facts`); the copy engines and the host data path only read the states.
struct CloneGroupMachine: Sendable, Hashable {
    /// The jobs a management operation starts; each serves one state of the clone.
    enum Job: Sendable, Hashable, CaseIterable {
        /// `clone sync`: delta extents source → clone.
        case sync
        /// `clone reverse-sync`: delta extents clone → source, reads of the source served from the clone.
        case reverseSync
        /// `clone restore --protected`: delta extents clone → source through copy-on-demand.
        case protectedRestore

        /// The state the clone is in while the job runs.
        var state: CloneState {
            switch self {
            case .sync: .synchronizing
            case .reverseSync: .reverseSyncing
            case .protectedRestore: .restoring
            }
        }

        /// Copies into the source: every other clone must be fractured, and only one may run per source.
        var restoresSource: Bool { self != .sync }

        /// How a refusal names the operation.
        var verb: String {
            switch self {
            case .sync: "sync"
            case .reverseSync: "reverse-sync"
            case .protectedRestore: "restore from"
            }
        }
    }

    /// A job the registry says is running on a clone (management operations wait for it or cancel it).
    struct RunningJob: Sendable, Hashable {
        var id: UInt64
        var kind: String
    }

    /// What the service saw of a clone before asking to start a job on it.
    struct Facts: Sendable, Hashable {
        /// The job running on the clone now, if any.
        var runningJob: RunningJob?
        /// Extents set in the clone's delta map (for the refusal of a clone still synchronizing).
        var deltaExtents: UInt64 = 0
        /// Every other clone's delta map covers this clone's, and that was committed since this operation
        /// began: a restore into the source may start (a COD may change the source from then on).
        var othersCoverDelta = false
    }

    /// Management operations that would change a group member behind its delta maps' back.
    enum VolumeChange: Sendable, Hashable, CaseIterable {
        case delete
        case resize
        case rollback

        var doing: String {
            switch self {
            case .delete: "deleting it"
            case .resize: "resizing it"
            case .rollback: "rolling it back"
            }
        }
    }

    enum Event: Sendable, Hashable {
        /// `clone add`: the new volume `clone` joins as a clone of `of` (this group's source; naming one of
        /// its clones is refused), synchronizing. `extentSize` is what the command asked for, if anything.
        case add(clone: UInt64, of: UInt64, extentSize: UInt64?)
        /// `clone fracture`: mirroring stops; the clone becomes a point-in-time copy.
        case fracture(clone: UInt64, deltaExtents: UInt64)
        /// `clone sync`, `clone reverse-sync`, `clone restore --protected`: start the job, or resume it after
        /// a cancel (the clone is already in the job's state).
        case start(Job, clone: UInt64, facts: Facts)
        /// The job serving the clone's state copied its last extent, and the copies are committed.
        case jobFinished(clone: UInt64)
        /// `job cancel` stopped the job: the state stays, and the same command resumes it.
        case jobCancelled(clone: UInt64)
        /// `clone remove`: the clone leaves the group (the volume stays).
        case remove(clone: UInt64, runningJob: RunningJob?)
        /// The pool opened and the clone's delta map came back from the persistent delta map.
        case recovered(clone: UInt64, deltaEmpty: Bool)
        /// Recovery is over: the interrupted jobs start again.
        case opened
        /// A management operation on a volume of the group (source or clone).
        case change(volume: UInt64, VolumeChange)
        /// A host write to `volume` of the group: only a fractured clone takes writes.
        case hostWrite(volume: UInt64)
    }

    enum Action: Sendable, Hashable {
        /// Make `clone` a member: its delta map holds every extent the source has data in.
        case createMember(clone: UInt64)
        /// Take `clone` out of the group's table (its maps go with it).
        case forgetMember(clone: UInt64)
        /// The last clone left: delete the group and its maps from the catalog.
        case deleteGroup
        /// The group record (clones and states) goes into the next commit.
        case persistRecord
        /// Every block of the persistent delta map is written again at the next commit (a clone's map was
        /// replaced, or a clone came or went).
        case persistWholeDeltaMap
        /// A fractured clone keeps no write-intent extents: they leave the persistent delta map.
        case endActivityLog(clone: UInt64)
        /// OR the restoring clone's delta map into every other clone's: those extents of the source are
        /// about to change.
        case coverDeltaInOthers(clone: UInt64)
        /// A protected restore begins: an empty protected restore map, persisted.
        case beginRestoreMap
        /// A protected restore ended: its protected restore map becomes `clone`'s new delta map.
        case endRestoreMap(adoptedBy: UInt64)
        /// A protected restore was interrupted: its protected restore map comes back from disk.
        case recoverRestoreMap
        /// Commit (the group commit) before going on: every state change is durable before it is reported.
        case commit
        /// Feed the same event again (with fresh facts): its first part is done and committed.
        case retry
        /// Start the job serving `clone`'s state.
        case startJob(clone: UInt64)
    }

    enum Outcome: Sendable, Hashable {
        /// Done in this order.
        case accepted([Action])
        /// Nothing changed.
        case refused(CloneGroupRefusal)
    }

    /// The group's source volume.
    let sourceID: UInt64
    /// Bytes per delta-map bit, fixed by the group's first clone.
    let extentSize: UInt64
    /// The clones by volume id, and where each stands with the source.
    private(set) var clones: [UInt64: CloneState]

    init(sourceID: UInt64, extentSize: UInt64, clones: [UInt64: CloneState] = [:]) {
        self.sourceID = sourceID
        self.extentSize = extentSize
        self.clones = clones
    }

    /// The clone being restored into the source (reverse sync or protected restore), if any.
    var restoring: (clone: UInt64, state: CloneState)? {
        clones.first { $0.value.restoresSource }.map { ($0.key, $0.value) }
    }

    func state(of clone: UInt64) -> CloneState? { clones[clone] }

    /// What `event` would do, without doing it: the service asks before it waits for a barrier or creates
    /// a volume, so that a refusal costs neither.
    func refusal(of event: Event) -> CloneGroupRefusal? {
        var copy = self
        if case .refused(let refusal) = copy.handle(event) { return refusal }
        return nil
    }

    mutating func handle(_ event: Event) -> Outcome {
        switch event {
        case .add(let clone, let volume, let extentSize):
            return add(clone, of: volume, extentSize: extentSize)
        case .fracture(let clone, let deltaExtents):
            return fracture(clone, deltaExtents: deltaExtents)
        case .start(let job, let clone, let facts):
            return start(job, clone, facts)
        case .jobFinished(let clone):
            return jobFinished(clone)
        case .jobCancelled(let clone):
            guard clones[clone] != nil else { return .refused(.notAClone(clone)) }
            return .accepted([])
        case .remove(let clone, let runningJob):
            return remove(clone, runningJob: runningJob)
        case .recovered(let clone, let deltaEmpty):
            return recovered(clone, deltaEmpty: deltaEmpty)
        case .opened:
            return .accepted(clones.filter { $0.value.isServedByJob }.keys.sorted().map { .startJob(clone: $0) })
        case .change(let volume, let change):
            if volume == sourceID {
                return .refused(.sourceOfClones(sourceID, clones: clones.keys.sorted(), change))
            }
            if clones[volume] != nil { return .refused(.memberOfGroup(volume)) }
            return .accepted([])
        case .hostWrite(let volume):
            if let state = clones[volume], state != .fractured {
                return .refused(.cloneNotWritable(volume, source: sourceID, state))
            }
            return .accepted([])
        }
    }

    private mutating func add(_ clone: UInt64, of volume: UInt64, extentSize: UInt64?) -> Outcome {
        if clones[volume] != nil { return .refused(.sourceIsAClone(volume)) }
        if let extentSize, extentSize != self.extentSize {
            return .refused(.extentSizeMismatch(source: sourceID, groupExtentSize: self.extentSize))
        }
        if let restoring { return .refused(.sourceBeingRestored(sourceID, from: restoring.clone)) }
        if clone == sourceID || clones[clone] != nil { return .refused(.alreadyInGroup(clone)) }
        clones[clone] = .synchronizing
        return .accepted([
            .createMember(clone: clone), .persistRecord, .persistWholeDeltaMap, .commit, .startJob(clone: clone),
        ])
    }

    private mutating func fracture(_ clone: UInt64, deltaExtents: UInt64) -> Outcome {
        guard let state = clones[clone] else { return .refused(.notAClone(clone)) }
        guard state == .synchronized else {
            if state == .fractured { return .refused(.alreadyFractured(clone)) }
            return .refused(.wrongState(clone, state, verb: "fracture", deltaExtents: deltaExtents))
        }
        clones[clone] = .fractured
        // The commit syncs the clone's data before it records the fracture.
        return .accepted([.endActivityLog(clone: clone), .persistRecord, .commit])
    }

    private mutating func start(_ job: Job, _ clone: UInt64, _ facts: Facts) -> Outcome {
        guard let state = clones[clone] else { return .refused(.notAClone(clone)) }
        if let running = facts.runningJob { return .refused(.jobRunning(clone, running)) }
        let target = job.state
        guard state == .fractured || state == target else {
            if target == .synchronizing && state == .synchronized { return .refused(.alreadySynchronized(clone)) }
            return .refused(.wrongState(clone, state, verb: job.verb, deltaExtents: facts.deltaExtents))
        }
        if let restoring, restoring.clone != clone {
            return .refused(.oneRestoreAtATime(sourceID, restoring: restoring.clone))
        }
        if job.restoresSource,
            let mirrored = clones.filter({ $0.key != clone && $0.value.isMirrored }).min(by: { $0.key < $1.key })
        {
            return .refused(.otherCloneMirrored(mirrored.key, mirrored.value, source: sourceID))
        }
        let resuming = state == target
        if job.restoresSource && !resuming && !facts.othersCoverDelta {
            // From the moment the state changes a COD may change the source: first every other clone's
            // delta map must cover the restoring clone's extents, durably.
            return .accepted([.coverDeltaInOthers(clone: clone), .persistWholeDeltaMap, .commit, .retry])
        }
        clones[clone] = target
        let restoreMap: [Action] = job == .protectedRestore && !resuming ? [.beginRestoreMap] : []
        return .accepted(restoreMap + [.persistRecord, .commit, .startJob(clone: clone)])
    }

    private mutating func jobFinished(_ clone: UInt64) -> Outcome {
        guard let state = clones[clone] else { return .refused(.notAClone(clone)) }
        switch state {
        case .synchronizing, .reverseSyncing:
            clones[clone] = .synchronized
            return .accepted([.persistRecord, .commit])
        case .restoring:
            clones[clone] = .fractured
            return .accepted([.endRestoreMap(adoptedBy: clone), .persistWholeDeltaMap, .persistRecord, .commit])
        case .synchronized, .fractured:
            return .accepted([.commit])  // no job serves these states: nothing to change
        }
    }

    private mutating func remove(_ clone: UInt64, runningJob: RunningJob?) -> Outcome {
        guard let state = clones[clone] else { return .refused(.notAClone(clone)) }
        if let runningJob { return .refused(.jobRunning(clone, runningJob)) }
        if state.restoresSource { return .refused(.removeWhileRestoring(clone, source: sourceID, state)) }
        clones[clone] = nil
        if clones.isEmpty { return .accepted([.forgetMember(clone: clone), .deleteGroup, .commit]) }
        return .accepted([.forgetMember(clone: clone), .persistRecord, .persistWholeDeltaMap, .commit])
    }

    private mutating func recovered(_ clone: UInt64, deltaEmpty: Bool) -> Outcome {
        guard let state = clones[clone] else { return .refused(.notAClone(clone)) }
        switch state {
        case .synchronized where !deltaEmpty:
            // Interrupted mid-write (write-intent extents) or mid-sync: synchronizing again until those
            // extents are copied.
            clones[clone] = .synchronizing
            return .accepted([.persistRecord])
        case .restoring:
            return .accepted([.recoverRestoreMap])
        case .synchronizing, .synchronized, .fractured, .reverseSyncing:
            return .accepted([])
        }
    }
}

extension CloneState {
    /// Host writes to the source reach this clone too.
    var isMirrored: Bool { self == .synchronizing || self == .synchronized || self == .reverseSyncing }
    /// A job copies while the clone is in this state (sync, reverse sync, protected restore).
    var isServedByJob: Bool { self == .synchronizing || self == .reverseSyncing || self == .restoring }
    /// The clone is being restored into the source.
    var restoresSource: Bool { self == .reverseSyncing || self == .restoring }
}
