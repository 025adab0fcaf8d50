import CairnIO
import Foundation
import Logging

/// What the sync engine picks next.
private enum SyncPick {
    /// Copy this extent (claimed on the COD scoreboard) in the direction of this state.
    case copy(UInt64, CloneState)
    /// Nothing left to copy.
    case done
    /// The clone left the state this job serves (removed, or another job took over).
    case gone
}

extension CloneGroups {
    /// Registers the job that serves a clone's current state (sync, reverse sync, protected restore) and
    /// runs it on its own thread, unless the options leave it to the caller (tests).
    @discardableResult
    func startJob(sourceID: UInt64, cloneID: UInt64) -> UInt64 {
        let (kind, name, total) = monitor.withLock { () -> (String, String, UInt64) in
            let group = table.groups[sourceID]
            let state = group?.machine.state(of: cloneID)
            let total = group?.members[cloneID]?.delta.setCount ?? 0
            return ("clone-\(state?.rawValue ?? "sync")", volumeName(cloneID), total)
        }
        let job = pool.jobs.start(kind: kind, target: name, total: total, unit: "extents")
        monitor.withLock { table.groups[sourceID]?.members[cloneID]?.job = job }
        if pool.options.runCloneJobsInBackground {
            // The thread holds the pool (and so this service) until the job ends.
            let thread = Thread { [pool] in
                setCurrentThreadName("cairn-clone")
                _ = pool.cloneGroups.runJob(sourceID: sourceID, cloneID: cloneID, job: job)
            }
            thread.start()
        }
        return job
    }

    /// Starts the jobs a crash (or a shutdown) interrupted: the recovery process's last step.
    func resumeJobs() {
        let pending = monitor.withLock { () -> [(UInt64, [Action])] in
            table.groups.values.compactMap { group in (try? apply(.opened, to: group)).map { (group.sourceID, $0) } }
        }
        for (source, actions) in pending {
            for case .startJob(let clone) in actions {
                let job = startJob(sourceID: source, cloneID: clone)
                logger.info("clone job resumed", metadata: ["job": "\(job)", "clone": "\(clone)"])
            }
        }
    }

    /// The sync engine: walks the clone's delta map in order and copies each set extent (source → clone
    /// when synchronizing, clone → source for a reverse sync or a protected restore), coordinating with
    /// the COD engine through the COD scoreboard. Returns true when the job ended (done, cancelled or
    /// failed); false when it stopped after `maxExtents` copies (tests drive jobs step by step).
    @discardableResult
    func runJob(sourceID: UInt64, cloneID: UInt64, job: UInt64, maxExtents: Int? = nil) -> Bool {
        var cursor: UInt64 = 0
        var copied: UInt64 = 0
        var extentSize: UInt64 = 0
        var hostRequestsSeen: UInt64 = 0
        do {
            while true {
                if pool.jobs.isCancelled(job) {
                    pool.jobs.finish(
                        job, .cancelled,
                        message: "paused after \(copied) extents; run the same command again to resume")
                    cancelled(sourceID: sourceID, cloneID: cloneID, job: job)
                    return true
                }
                if let maxExtents, copied >= maxExtents { return false }
                let pick = try monitor.withLock { () throws -> SyncPick in
                    while true {
                        try pool.checkWritable()
                        guard let group = table.groups[sourceID], let member = group.members[cloneID],
                            member.job == job, group.state(of: member).isServedByJob
                        else { return .gone }
                        extentSize = group.extentSize
                        if let pick = pickExtent(group, member, cursor: &cursor) { return pick }
                        monitor.wait()
                    }
                }
                switch pick {
                case .gone:
                    pool.jobs.finish(job, .cancelled, message: "the clone left this state; nothing more to do")
                    return true
                case .done:
                    try finishJob(sourceID: sourceID, cloneID: cloneID, job: job)
                    pool.jobs.finish(
                        job, .succeeded, message: "copied \(copied) extents (\(copied * extentSize) bytes at most)")
                    return true
                case .copy(let extent, let direction):
                    let started = ContinuousClock.now
                    try copyClaimed(extent, sourceID: sourceID, cloneID: cloneID, direction: direction)
                    let copyTime = started.duration(to: .now)
                    copied += 1
                    let remaining = remainingExtents(sourceID, cloneID)
                    pool.jobs.progress(job, done: copied, total: copied + remaining)
                    // The sync rate limit, never with the scoreboard claimed, nor after the last extent.
                    if remaining > 0 {
                        pause(job: job)
                        yieldToHosts(sourceID: sourceID, seen: &hostRequestsSeen, copyTime: copyTime)
                    }
                }
            }
        } catch let error as EngineError where error.code == .closed {
            pool.jobs.finish(job, .cancelled, message: "the pool closed; the job resumes when it opens again")
        } catch {
            pool.jobs.finish(job, .failed, message: "\(error)")
            logger.error("clone job failed", metadata: ["job": "\(job)", "error": "\(error)"])
        }
        return true
    }

    /// The share of time a clone job copies while hosts do I/O to the group; it rests the remainder
    /// after each extent. Like DRBD's resync controller (c-min-rate: resync backs off when application
    /// I/O is seen) and dm-clone's hydration throttling. Measured with bench/clone-restore.sh (4 GiB
    /// restore, 4 KiB QD32, two cores): flat out the hosts kept 0.24/0.18 of their
    /// read/write IOPS, at a half share 0.29/0.25, at a fifth 0.41/0.31 (the restore took 25 % longer).
    static let cloneJobShareUnderHostIO = 0.2

    /// Rests after a copy when host requests arrived since the last look, so that the copy gets at most
    /// `cloneJobShareUnderHostIO` of the time; without host I/O the job runs flat out.
    private func yieldToHosts(sourceID: UInt64, seen: inout UInt64, copyTime: Duration) {
        let now = monitor.withLock { table.groups[sourceID]?.hostRequests ?? 0 }
        defer { seen = now }
        guard now != seen else { return }
        let share = Self.cloneJobShareUnderHostIO
        let rest = copyTime * ((1 - share) / share)
        Thread.sleep(forTimeInterval: Double(rest.components.seconds) + Double(rest.components.attoseconds) / 1e18)
    }

    /// The sync rate limit between two extents; a cancel cuts it short.
    private func pause(job: UInt64) {
        var remaining = pool.options.cloneExtentDelayNanoseconds
        while remaining > 0 && !pool.jobs.isCancelled(job) {
            let step = min(remaining, 20_000_000)
            Thread.sleep(forTimeInterval: Double(step) / 1e9)
            remaining -= step
        }
    }

    /// Chooses the next extent (monitor held); nil means wait for a change. Scans from `cursor`; at the
    /// end, starts over from 0 while bits are left (extents the COD engine was copying, or set again).
    private func pickExtent(_ group: CloneGroupState, _ member: CloneMember, cursor: inout UInt64) -> SyncPick? {
        while true {
            let start = cursor
            var position = cursor
            let state = group.state(of: member)
            while let extent = member.delta.next(atOrAfter: position) {
                position = extent + 1
                if state == .restoring, group.restoreMap?.contains(extent) == true {
                    // Written by the host during the restore (perhaps set again by recovery, the clone-group design's fig. 9):
                    // the source's data there is the host's and must not be overwritten from the clone.
                    member.delta.remove(extent)
                    group.persistentDelta.markDirty(extent)
                    continue
                }
                if group.scoreboard.contains(extent) { continue }  // the COD engine is copying it
                if group.writers[extent] != nil {
                    cursor = extent
                    return nil  // a host write is changing it: copy after it
                }
                group.scoreboard.claim(extent)
                cursor = extent + 1
                return .copy(extent, state)
            }
            if member.delta.isEmpty { return .done }
            cursor = 0
            if start == 0 { return nil }  // what is left is being copied on demand: wait for it
        }
    }

    /// Copies one claimed extent, then clears it from the delta map and the scoreboard.
    private func copyClaimed(_ extent: UInt64, sourceID: UInt64, cloneID: UInt64, direction: CloneState) throws {
        var failure: (any Error)?
        do {
            let extentSize = try monitor.withLock { () throws -> UInt64 in
                guard let group = table.groups[sourceID] else {
                    throw EngineError(.notFound, "the clone group was removed")
                }
                return group.extentSize
            }
            if direction == .synchronizing {
                try copyExtent(from: sourceID, to: cloneID, extent: extent, extentSize: extentSize)
            } else {
                try copyExtent(from: cloneID, to: sourceID, extent: extent, extentSize: extentSize)
            }
        } catch {
            failure = error
        }
        monitor.withLock {
            guard let group = table.groups[sourceID] else { return }
            if failure == nil, group.members[cloneID]?.delta.remove(extent) == true {
                group.persistentDelta.markDirty(extent)
            }
            group.scoreboard.release(extent)
        }
        monitor.broadcast()
        if let failure { throw failure }
    }

    private func remainingExtents(_ sourceID: UInt64, _ cloneID: UInt64) -> UInt64 {
        monitor.withLock { table.groups[sourceID]?.members[cloneID]?.delta.setCount ?? 0 }
    }

    /// The end of a job: the copied data and the cleared bits are made durable first, then the state
    /// changes and that is committed too. At the end of a protected restore the protected restore map
    /// becomes the clone's new delta map.
    private func finishJob(sourceID: UInt64, cloneID: UInt64, job: UInt64) throws {
        try pool.flush()
        let later = try monitor.withLock { () throws -> [Action] in
            guard let group = table.groups[sourceID], let member = group.members[cloneID], member.job == job
            else { return [.commit] }
            return try apply(.jobFinished(clone: cloneID), to: group)
        }
        _ = try finish(later, sourceID: sourceID)
    }

    /// A cancel leaves the clone's state as it is (the same command resumes the job); the machine says so.
    private func cancelled(sourceID: UInt64, cloneID: UInt64, job: UInt64) {
        monitor.withLock {
            guard let group = table.groups[sourceID], group.members[cloneID]?.job == job else { return }
            _ = try? apply(.jobCancelled(clone: cloneID), to: group)
        }
    }

    // MARK: - Tests

    /// Runs the job of clone `name` on the calling thread, for at most `maxExtents` copies. Returns true
    /// when the job ended.
    @_spi(Testing)
    public func runJob(clone name: String, maxExtents: Int? = nil) throws -> Bool {
        let (source, clone, job) = try monitor.withLock { () throws -> (UInt64, UInt64, UInt64) in
            let (group, member) = try member(named: name)
            guard let job = member.job else { throw EngineError(.notFound, "no job for '\(name)'") }
            return (group.sourceID, member.id, job)
        }
        return runJob(sourceID: source, cloneID: clone, job: job, maxExtents: maxExtents)
    }

    /// A clone's delta map, the protected restore map of a restore in progress, and the group's
    /// persistent delta map as last committed.
    @_spi(Testing)
    public func maps(clone name: String) throws -> (delta: [UInt64], restoreMap: [UInt64]?, persistent: [UInt64]) {
        try monitor.withLock {
            let (group, member) = try member(named: name)
            return (member.delta.members, group.restoreMap?.members, group.persistentDelta.durable.members)
        }
    }

    /// Requests that waited on the COD queue, and extents the COD engine copied, in `source`'s group.
    @_spi(Testing)
    public func copyOnDemandCounters(source name: String) throws -> (queued: UInt64, copied: UInt64) {
        try monitor.withLock {
            guard let group = table.groups[try pool.state.volumeID(named: name)] else {
                throw EngineError(.notFound, "'\(name)' has no clones")
            }
            return (group.codQueue.requestsQueued, group.codQueue.extentsCopied)
        }
    }
}
