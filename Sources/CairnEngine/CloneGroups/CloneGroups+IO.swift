import CairnIO
import Synchronization

/// What a host write registered with its clone group: the extents it holds against the sync engine
/// (released after the write), and the clones it is mirrored to.
struct CloneWriteTicket {
    var sourceID: UInt64
    var extents: ClosedRange<UInt64>
    var mirrors: [UInt64]
}

/// The next thing a host request must do before it may touch the disk.
private enum CloneIOStep {
    /// Go ahead (a write holds the ticket until it completes).
    case proceed(CloneWriteTicket?)
    /// Read this volume instead (regular reverse sync: reads are served from the clone).
    case route(UInt64)
    /// The COD engine must copy these extents (claimed on the scoreboard) from the clone first.
    case copyOnDemand(clone: UInt64, extents: [UInt64])
    /// Bits that protect this write are set in memory but not yet durable: commit, then look again.
    case commit
    /// Only protected-restore bits of extents whose restore is already durable must become durable: a
    /// metadata-only commit suffices (`CloneGroups.commitRestoreIntent`), then look again.
    case commitRestoreIntent(sourceID: UInt64)
    /// Extents it needs are being copied by someone else: wait on the COD queue.
    case wait
}

/// The hooks the core's host data path calls before I/O: each returns at once, with no lock taken, while no
/// volume of the pool is in a clone group (`inUse`).
extension CloneGroups {
    /// Prepares a host write (WRITE, WRITE_ZEROES, TRIM, COPY_AND_WRITE) to a volume in a clone group:
    ///
    /// - to a source under protected restore: extents still to copy go through the COD engine first;
    ///   then the extents are set in the protected restore map;
    /// - to a source: each fractured clone's delta map, and each mirrored clone's write-intent extents,
    ///   get the write's extents;
    /// - to a fractured clone: its delta map gets them; a clone in any other state refuses writes.
    ///
    /// Every such bit is durable before this returns (write-intent), so that no crash can leave data on
    /// disk that the maps do not know about, with one exception that costs nothing in safety: see
    /// `sourceStep`. Returns nil for volumes outside clone groups.
    func beforeWrite(volumeID: UInt64, offset: UInt64, length: UInt64, fua: Bool) throws -> CloneWriteTicket? {
        guard inUse.load(ordering: .relaxed), length > 0 else { return nil }
        switch try step(volumeID: volumeID, offset: offset, length: length, writing: true, fua: fua) {
        case .proceed(let ticket): return ticket
        default: return nil
        }
    }

    /// The volume a host read of `volumeID` must read: itself, after any COD its extents need during a
    /// protected restore, or the clone during a regular reverse sync.
    func readTarget(volumeID: UInt64, offset: UInt64, length: UInt64) throws -> UInt64 {
        guard inUse.load(ordering: .relaxed), length > 0 else { return volumeID }
        if case .route(let target) = try step(
            volumeID: volumeID, offset: offset, length: length, writing: false, fua: false)
        {
            return target
        }
        return volumeID
    }

    /// True when reads of `volumeID` cannot be served straight from its own slots (a restore into it runs).
    func routesReads(volumeID: UInt64) -> Bool {
        guard inUse.load(ordering: .relaxed) else { return false }
        return monitor.withLock {
            guard let group = table.groups[volumeID] else { return false }
            return group.machine.restoring != nil
        }
    }

    /// True when a read of `[offset, offset + length)` of `volumeID` cannot be served straight from its
    /// own slots: a reverse sync runs into it (reads come from the clone), or a protected restore still
    /// has to copy one of these extents (a COD first). An extent the restore is done with stays done for
    /// the rest of the restore (nothing adds to the restoring clone's delta map meanwhile), so a read of
    /// restored extents may be answered at once, on the event loop, like any read.
    func routesReads(volumeID: UInt64, offset: UInt64, length: UInt64) -> Bool {
        guard inUse.load(ordering: .relaxed) else { return false }
        return monitor.withLock {
            guard let group = table.groups[volumeID], let restoring = group.restoringMember else {
                return false
            }
            guard restoring.state == .restoring, length > 0 else { return true }
            return group.extents(offset: offset, length: length).contains {
                restoring.member.delta.contains($0) || group.scoreboard.contains($0)
            }
        }
    }

    /// Runs the steps (COD, commits, waits) until the request may proceed; returns the final step.
    private func step(volumeID: UInt64, offset: UInt64, length: UInt64, writing: Bool, fua: Bool) throws
        -> CloneIOStep
    {
        var queued = false
        defer {
            if queued { monitor.withLock { _ = table.group(containing: volumeID)?.codQueue.dequeue() } }
        }
        while true {
            let step = try monitor.withLock { () throws -> CloneIOStep in
                while true {
                    guard let group = table.group(containing: volumeID),
                        let volume = pool.state.volumes[volumeID], offset < volume.record.size,
                        length <= volume.record.size - offset
                    else {
                        // Not in a group, or out of bounds: the I/O's own checks answer.
                        return .proceed(nil)
                    }
                    if !queued { group.hostRequests &+= 1 }
                    let step: CloneIOStep
                    if group.barrier && writing {
                        step = .wait
                    } else if volumeID == group.sourceID {
                        step = sourceStep(
                            group, group.extents(offset: offset, length: length), writing: writing, fua: fua)
                    } else if writing {
                        step = try cloneWriteStep(group, group.members[volumeID]!, group.extents(offset: offset, length: length))
                    } else {
                        step = .proceed(nil)
                    }
                    guard case .wait = step else { return step }
                    if !queued && !group.barrier {
                        queued = true
                        group.codQueue.enqueue()
                    }
                    monitor.wait()
                }
            }
            switch step {
            case .copyOnDemand(let clone, let extents):
                try copyOnDemand(volumeID: volumeID, clone: clone, extents: extents)
            case .commit:
                try pool.flush()
            case .commitRestoreIntent(let sourceID):
                try commitRestoreIntent(sourceID: sourceID)
            case .wait:
                continue
            case .proceed, .route:
                return step
            }
        }
    }

    /// A host request to the source of `group` (monitor held).
    private func sourceStep(_ group: CloneGroupState, _ extents: ClosedRange<UInt64>, writing: Bool, fua: Bool)
        -> CloneIOStep
    {
        let restoring = group.restoringMember?.member
        // Protected restore: an extent the clone still has to give the source, and that the host has not
        // written since the restore began, is copied on demand before the request proceeds. The protected
        // restore map is checked too: after a recovery the delta map may hold bits again for extents the
        // host wrote (the clone-group design's fig. 9), and copying those would destroy the host's write.
        if let restoring, group.state(of: restoring) == .restoring, let restoreMap = group.restoreMap {
            let needed = extents.filter { restoring.delta.contains($0) && !restoreMap.contains($0) }
            if !needed.isEmpty {
                let free = needed.filter { !group.scoreboard.contains($0) }
                guard !free.isEmpty else { return .wait }
                for extent in free { group.scoreboard.claim(extent) }
                return .copyOnDemand(clone: restoring.id, extents: free)
            }
        }
        guard writing else {
            if let restoring, group.state(of: restoring) == .reverseSyncing { return .route(restoring.id) }
            return .proceed(nil)
        }
        // The sync engine copying one of these extents (mirrored clones) finishes first.
        if extents.contains(where: { group.scoreboard.contains($0) }) { return .wait }
        var mustCommit = false
        var intent = false
        let tracked = group.machine.clones.values.contains { $0 != .restoring }
        for extent in extents {
            if group.restoreMap != nil {
                if group.restoreMap!.insert(extent) { group.persistentRestoreMap.markDirty(extent) }
                if !group.persistentRestoreMap.isDurablySet(extent) {
                    // The protected restore map bit guards a write against being copied over after a crash.
                    // While the persistent delta map still durably holds the extent, a crash sends the
                    // restore back over the whole extent anyway, wiping this write, which no FLUSH has
                    // promised yet: the bit can wait for the next commit, which makes it durable in the
                    // same transaction as the copy it depends on. FUA promises now: commit first.
                    // Once the extent's restore is durable, the write lands on restored data in place: the
                    // bit must be durable first, but no data depends on it, so a metadata-only commit
                    // does (DRBD's activity log transaction, not a full sync).
                    if !group.persistentDelta.isDurablySet(extent) {
                        group.restoreIntent.insert(extent)
                        intent = true
                    } else if fua {
                        mustCommit = true
                    }
                }
            }
            for member in group.members.values {
                switch group.state(of: member) {
                case .fractured:
                    if member.delta.insert(extent) { group.persistentDelta.markDirty(extent) }
                case .synchronizing, .synchronized, .reverseSyncing:
                    if !member.delta.contains(extent) && member.activity.insert(extent) {
                        group.persistentDelta.markDirty(extent)
                    }
                    if member.activity.contains(extent) {
                        group.activityClock += 1
                        member.activityUse[extent] = group.activityClock
                    }
                case .restoring:
                    // Its delta map is what remains to copy; the protected restore map tracks this write.
                    break
                }
            }
            if tracked && !group.persistentDelta.isDurablySet(extent) { mustCommit = true }
        }
        if mustCommit { return .commit }
        if intent { return .commitRestoreIntent(sourceID: group.sourceID) }
        register(group, extents)
        return .proceed(
            CloneWriteTicket(
                sourceID: group.sourceID, extents: extents,
                mirrors: group.machine.clones.filter(\.value.isMirrored).map(\.key).sorted()))
    }

    /// A host write to a clone (monitor held): only a fractured clone takes writes, and they set its
    /// delta map bits durably first.
    private func cloneWriteStep(_ group: CloneGroupState, _ member: CloneMember, _ extents: ClosedRange<UInt64>) throws
        -> CloneIOStep
    {
        if case .refused(let refusal) = group.machine.handle(.hostWrite(volume: member.id)) {
            throw refusal.error(naming: volumeName)
        }
        var mustCommit = false
        for extent in extents {
            if member.delta.insert(extent) { group.persistentDelta.markDirty(extent) }
            if !group.persistentDelta.isDurablySet(extent) { mustCommit = true }
        }
        if mustCommit { return .commit }
        register(group, extents)
        return .proceed(CloneWriteTicket(sourceID: group.sourceID, extents: extents, mirrors: []))
    }

    private func register(_ group: CloneGroupState, _ extents: ClosedRange<UInt64>) {
        for extent in extents { group.writers[extent, default: 0] += 1 }
        group.writesInFlight += 1
    }

    /// The write holding `ticket` completed (or failed).
    func afterWrite(_ ticket: CloneWriteTicket?) {
        guard let ticket else { return }
        monitor.withLock {
            guard let group = table.groups[ticket.sourceID] else { return }
            for extent in ticket.extents {
                let count = (group.writers[extent] ?? 1) - 1
                group.writers[extent] = count == 0 ? nil : count
            }
            group.writesInFlight -= 1
        }
        monitor.broadcast()
    }

    /// Mirrors a completed source write to the clones of `ticket`. Returns true when a FUA write now
    /// needs a commit to cover the mirrored data too.
    func mirror(_ ticket: CloneWriteTicket?, offset: UInt64, fua: Bool, _ body: (UInt64) throws -> Void)
        throws -> Bool
    {
        guard let ticket, !ticket.mirrors.isEmpty else { return false }
        for clone in ticket.mirrors {
            do {
                try body(clone)
            } catch {
                // The clone missed this write: its extents become differences for the next sync.
                monitor.withLock {
                    if let group = table.groups[ticket.sourceID], let member = group.members[clone] {
                        for extent in ticket.extents where member.delta.insert(extent) {
                            group.persistentDelta.markDirty(extent)
                        }
                    }
                }
                throw error
            }
        }
        return fua
    }

    /// The COD engine: copies `extents` (claimed on the scoreboard by the caller) from the clone to the
    /// source, clearing each from the clone's delta map once copied, so the sync engine never copies it
    /// again over a host write.
    private func copyOnDemand(volumeID: UInt64, clone: UInt64, extents: [UInt64]) throws {
        var remaining = extents[...]
        defer {
            if !remaining.isEmpty {
                monitor.withLock {
                    if let group = table.groups[volumeID] {
                        for extent in remaining { group.scoreboard.release(extent) }
                    }
                }
                monitor.broadcast()
            }
        }
        while let extent = remaining.first {
            let extentSize = try monitor.withLock { () throws -> UInt64 in
                guard let group = table.groups[volumeID] else {
                    throw EngineError(.notFound, "the clone group was removed")
                }
                return group.extentSize
            }
            try copyExtent(from: clone, to: volumeID, extent: extent, extentSize: extentSize)
            monitor.withLock {
                guard let group = table.groups[volumeID] else { return }
                if group.members[clone]?.delta.remove(extent) == true { group.persistentDelta.markDirty(extent) }
                group.scoreboard.release(extent)
                group.codQueue.copied(1)
            }
            remaining = remaining.dropFirst()
            monitor.broadcast()
        }
    }

    /// Copies one extent's content between two volumes of a group (`Pool.copyRange`: a thin clone stays thin).
    func copyExtent(from: UInt64, to: UInt64, extent: UInt64, extentSize: UInt64) throws {
        let size = try monitor.withLock { try pool.state.liveVolume(from).record.size }
        let offset = extent * extentSize
        guard offset < size else { return }
        try pool.copyRange(from: from, to: to, offset: offset, length: min(extentSize, size - offset))
    }
}
