import CairnEngine
import CairnIO
import Foundation
import Logging
import MirrorProtocol
import NIOCore
import Synchronization

/// Management operations over mirrors: establish, re-establish, sever, remove, resize, verify, frame size,
/// the target's status, and release on a target.
extension Replication {
    /// `HOST:PORT/VOLUME`.
    static func parseTarget(_ text: String) throws -> (host: String, port: Int, volume: String) {
        guard let slash = text.lastIndex(of: "/"), let colon = text[..<slash].lastIndex(of: ":"),
            let port = Int(text[text.index(after: colon)..<slash]), (1...65535).contains(port),
            !text[..<colon].isEmpty, text.index(after: slash) < text.endIndex
        else {
            throw ReplicationError(.invalidArgument, "a target is HOST:PORT/VOLUME (e.g. 10.0.0.2:10810/db), not '\(text)'")
        }
        return (String(text[..<colon]), port, String(text[text.index(after: slash)...]))
    }

    /// Pairs VOLUME with a volume on another daemon and starts the initial sync.
    public func establish(
        volume name: String, target text: String, extentSize: UInt64?, discardTargetChanges: Bool,
        asynchronousLag: UInt64? = nil
    ) async throws -> MirrorInfo {
        if let lag = asynchronousLag, !(Self.minimumAsynchronousLag...Self.maximumAsynchronousLag).contains(lag) {
            throw ReplicationError(
                .invalidArgument,
                "the asynchronous lag must be \(Self.minimumAsynchronousLag) to \(Self.maximumAsynchronousLag) bytes")
        }
        guard settings.secret != nil else {
            throw ReplicationError(
                .notConfigured, "mirroring needs a shared secret: start this daemon with --replication-secret-file")
        }
        let (host, port, targetVolume) = try Self.parseTarget(text)
        let extent = extentSize ?? ReplicationSettings.defaultExtentSize
        guard extent.nonzeroBitCount == 1, (4096...(1 << 30)).contains(extent) else {
            throw ReplicationError(.invalidArgument, "the extent size must be a power of two from 4 KiB to 1 GiB")
        }
        let volume = try engine { try pool.volumes.info(named: name) }
        guard primary(volumeID: volume.id) == nil else {
            throw ReplicationError(.alreadyExists, "volume '\(name)' is already mirrored; see `cairn mirror status \(name)`")
        }
        guard !target.isPaired(volumeID: volume.id) else {
            throw ReplicationError(.busy, "volume '\(name)' is itself the target of a mirror here")
        }
        let record = PrimaryMirrorRecord(
            volumeID: volume.id, targetHost: host, targetPort: port, targetVolume: targetVolume, extentSize: extent,
            state: .synchronizing,
            generations: MirrorGenerations(
                pairID: UInt64.random(in: 1...UInt64.max), synced: 0, current: UInt64.random(in: 1...UInt64.max)),
            frameSize: MirrorLimits.defaultFrameSize, createdAt: Int64(Date().timeIntervalSince1970 * 1000), lastError: nil,
            asynchronousLagBytes: asynchronousLag)
        let store = self.store
        let executor = self.executor
        // The map exists, all dirty and durable, before the target hears of the pairing.
        let map = try await executor.run {
            try ChangeMap.create(path: store.changeMapPath(volume.id), executor: executor, extentSize: extent, volumeSize: volume.size)
        }
        map.markAllDirty()
        try await map.makeDurable()
        let mirror = PrimaryMirror(
            record: record, changeMap: map, pool: pool, executor: executor, store: store, settings: settings, logger: logger)
        do {
            var options: MirrorEstablishRequest.Options = []
            if discardTargetChanges { options.insert(.discardTargetChanges) }
            let (connection, handle) = try await mirror.openConnection(initial: true, options: options, explicit: true)
            let installed = mirror.state.withLock { s in
                guard mirror.feed(.linked, reason: nil, &s).contains(.installConnection) else { return false }
                s.connection = connection
                s.handle = handle
                return true
            }
            guard installed else {
                connection.close()
                throw ReplicationError(.busy, "the daemon is stopping")
            }
            try await executor.run { try store.save(record, to: store.primaryPath(volume.id)) }
        } catch {
            try? store.remove(store.changeMapPath(volume.id))
            if let remote = error as? MirrorRemoteError { throw ReplicationError.remote(remote, target: text) }
            if let error = error as? ReplicationError { throw error }
            throw ReplicationError(.unreachable, "cannot reach the target \(host):\(port): \(error)")
        }
        primaries.withLock { $0.mirrors[volume.id] = mirror }
        // Writes that started unmirrored finish before the initial sync reads their extents; one still
        // running after a minute is stuck I/O, and a sync that might miss it is no mirror.
        guard await drainUnmirroredWrites(volumeID: volume.id, timeout: Self.unmirroredDrainTimeout) else {
            let stuck =
                "host writes to volume '\(name)' that started before the mirror have not finished in "
                + "\(Self.unmirroredDrainTimeout)"
            do {
                try await remove(volume: name)
            } catch {
                // Said, not swallowed: the operator must know the half-made mirror is still there.
                logger.error("removing a mirror whose establish failed", metadata: ["volume": "\(name)", "error": "\(error)"])
                throw ReplicationError(
                    .busy, "\(stuck); removing the half-made mirror failed too (\(error)): `cairn mirror remove \(name)`")
            }
            throw ReplicationError(.busy, "\(stuck); the mirror was not established, try again")
        }
        startCheckpoints(mirror)
        mirror.scheduleResync(reason: "established")
        logger.info("mirror established", metadata: ["volume": "\(name)", "target": "\(text)"])
        return try info(volume: name)
    }

    /// Resumes a fractured or severed mirror: checks generations with the target, then resyncs only the
    /// change map's extents (everything, with `discardTargetChanges` after a divergence).
    ///
    /// When hosts wrote the target on its own (severed, or promoted for failover), the operator chooses:
    /// `discardTargetChanges` (the primary's data overwrites them) or `takeTargetChanges` (the target's
    /// changed extents, and the primary's own, are copied target → primary first; see
    /// `PrimaryMirror+TakeTargetChanges.swift`). Without a choice it is refused, naming both and saying
    /// which side changed. `checksum`: the resync compares SHA-256 digests per extent first and sends only
    /// the extents that differ (DRBD's csums-alg).
    public func reestablish(
        volume name: String, discardTargetChanges: Bool, takeTargetChanges: Bool = false, checksum: Bool = false
    ) async throws -> MirrorInfo {
        let mirror = try mirror(named: name)
        let current = mirror.record
        guard !(discardTargetChanges && takeTargetChanges) else {
            throw ReplicationError(
                .invalidArgument, "choose one of --discard-target-changes and --take-target-changes, not both")
        }
        guard current.state == .fractured || current.state == .severed else {
            throw ReplicationError(.wrongState, "mirror of '\(name)' is \(current.state.rawValue), not fractured or severed")
        }
        // A resync of the previous link may still be winding down (a retry sleeping): let it end first, so
        // exactly one resync runs for the new link.
        if let previous = mirror.state.withLock({ $0.resync }) { await previous.value }
        let store = self.store
        let id = mirror.volumeID
        if discardTargetChanges {
            // Durable before the target hears it may drop its changes: a crash here costs a full copy, never a lost extent.
            mirror.changeMap.markAllDirty()
            try await mirror.changeMap.makeDurable()
            // A take-target-changes in progress is abandoned: the primary's data wins everywhere.
            try await mirror.update { $0.takingTargetChanges = nil }
            mirror.setPullMap(nil)
            try await executor.run { try store.remove(store.pullMapPath(id)) }
        } else if takeTargetChanges {
            // Durable first: reconnects (and a restart) then ask the target to keep its changes for the pull.
            try await mirror.update { $0.takingTargetChanges = true }
        }
        let taking = mirror.record.takingTargetChanges == true
        var options: MirrorEstablishRequest.Options = []
        if discardTargetChanges { options.insert(.discardTargetChanges) }
        if taking { options.insert(.takeTargetChanges) }
        do {
            let (connection, handle) = try await mirror.openConnection(initial: false, options: options, explicit: true)
            let installed = mirror.state.withLock { s in
                guard mirror.feed(.linked, reason: nil, &s).contains(.installConnection) else { return false }
                s.connection = connection
                s.handle = handle
                s.record.lastError = nil
                s.checksumResync = checksum
                return true
            }
            guard installed else {
                connection.close()
                throw ReplicationError(.busy, "the daemon is stopping or the mirror was removed")
            }
            if taking {
                // The pull set is built (and durable) before the command answers, so its answer and every
                // status after it show the pull until its last extent is taken.
                do {
                    try await mirror.preparePull()
                } catch {
                    // Not linked after all: back to where it was, nothing pulled.
                    await mirror.pause("cannot take the target's changes: \(error)", as: current.state)
                    throw error
                }
            }
        } catch let error as MirrorRemoteError {
            if error.code == .targetChanged { throw refusal(name: name, mirror: mirror, target: error) }
            throw ReplicationError.remote(error, target: current.target)
        } catch let error as ReplicationError {
            throw error
        } catch let error as PrimaryMirror.TargetUnavailable {
            throw ReplicationError(.unreachable, "cannot take the target's changes from \(current.target): \(error.reason)")
        } catch {
            throw ReplicationError(.unreachable, "cannot reach the target \(current.target): \(error)")
        }
        mirror.scheduleResync(reason: taking ? "re-established, taking the target's changes" : "re-established")
        return try info(volume: name)
    }

    /// The sentence for a re-establish refused because the target changed: which side(s) changed, and the
    /// two choices. "Here changed" counts the change map, which also holds the extents whose writes were in
    /// flight when the link failed (the activity log): conservative, like DRBD's bitmap after a crash, so
    /// a sever right after writes may be called a divergence. Both choices are correct either way.
    func refusal(name: String, mirror: PrimaryMirror, target: MirrorRemoteError) -> ReplicationError {
        let here = mirror.changeMap.changedCount
        let sides =
            here > 0
            ? "Both sides changed (diverged): \(target.message), and '\(name)' here has \(here) extent(s) written, or in flight, since the mirror was split."
            : "The target changed: \(target.message); '\(name)' here has not changed since the mirror was split."
        return ReplicationError(
            here > 0 ? .diverged : .targetChanged,
            "\(sides) Choose: re-establish with --take-target-changes (copy the target's changed extents here, replacing this side's) or --discard-target-changes (overwrite the target's changes with this side's data).")
    }

    /// Planned fracture: the target is told (its volume becomes usable on its own), writes are tracked.
    public func sever(volume name: String) async throws -> MirrorInfo {
        let mirror = try mirror(named: name)
        guard mirror.record.state != .severed else { return try info(volume: name) }
        // Severed first: writes from now on are tracked instead of sent (one already sent and refused by
        // the target after it hears the sever is tracked too).
        let (handle, connected) = mirror.state.withLock { s -> (UInt64, Bool) in
            mirror.feed(.severing, reason: nil, &s)
            return (s.handle, s.connection?.isActive ?? false)
        }
        var told = false
        if connected {
            do {
                _ = try await mirror.send(.sever, payload: MirrorHandleValue(handle: handle).payload)
                told = true
            } catch {
                logger.warning("the target did not acknowledge the sever", metadata: ["error": "\(error)"])
            }
        }
        await mirror.pause(
            told ? nil : "the target was not told of the sever (unreachable); its volume stays read-only there",
            as: .severed)
        return try info(volume: name)
    }

    /// Ends mirroring of a volume: the change map and record go; the target is told if reachable.
    public func remove(volume name: String) async throws {
        let mirror = try mirror(named: name)
        let id = mirror.volumeID
        if mirror.counters.connected || mirror.isLinked {
            let handle = mirror.state.withLock { $0.handle }
            _ = try? await mirror.send(.remove, payload: MirrorHandleValue(handle: handle).payload)
        }
        mirror.markRemoved()
        mirror.setPullMap(nil)
        checkpoints.withLock { $0.removeValue(forKey: id)?.cancel() }
        primaries.withLock { $0.mirrors[id] = nil }
        let store = self.store
        try await executor.run {
            try store.remove(store.primaryPath(id))
            try store.remove(store.changeMapPath(id))
            try store.remove(store.pullMapPath(id))
        }
    }

    /// Grows or shrinks both volumes of a linked mirror (the resize frame): the target validates
    /// and resizes first, then the primary; host writes wait meanwhile (the whole volume is held in the
    /// overlap gate). A shrink loses data past the new end and needs `force`.
    public func resize(volume name: String, size: UInt64, force: Bool) async throws -> MirrorInfo {
        let mirror = try mirror(named: name)
        let current = try engine { try pool.volumes.info(named: name) }
        guard mirror.record.state == .mirrored else {
            throw ReplicationError(
                .wrongState,
                "the mirror of '\(name)' is \(mirror.record.state.rawValue); resize needs it mirrored (re-establish first)")
        }
        guard size != current.size else { return try info(volume: name) }
        guard size > current.size || force else {
            throw ReplicationError(
                .invalidArgument, "shrinking '\(name)' discards its data past \(size) bytes on both sides: add --force")
        }
        let token = await mirror.gate.acquire(0..<UInt64.max)
        defer { mirror.gate.release(token) }
        let handle = mirror.state.withLock { $0.handle }
        do {
            _ = try await mirror.send(.resize, payload: MirrorHandleValue(handle: handle, value: size).payload)
        } catch let error as MirrorRemoteError {
            throw ReplicationError.remote(error, target: mirror.record.target)
        } catch let error as PrimaryMirror.TargetUnavailable {
            throw ReplicationError(.unreachable, error.reason)
        }
        let volumes = self.pool
        do {
            _ = try await executor.run { try volumes.volumes.resize(name: name, size: size, force: force) }
        } catch {
            // The target already changed: put its size back; what it lost past the new end is copied again.
            _ = try? await mirror.send(.resize, payload: MirrorHandleValue(handle: handle, value: current.size).payload)
            let first = min(size, current.size) / mirror.changeMap.extentSize
            mirror.changeMap.markDirty(first..<mirror.changeMap.extentCount)
            try? await mirror.changeMap.makeDurable()
            if let error = error as? EngineError { throw ReplicationError.engine(error) }
            throw error
        }
        let map = mirror.changeMap
        try await executor.run { try map.resize(volumeSize: size) }
        try await map.makeDurable()
        logger.info("mirrored volume resized", metadata: ["volume": "\(name)", "size": "\(size)"])
        return try info(volume: name)
    }

    /// Online verify: compares every extent's SHA-256 on both sides as a job; differing extents are
    /// resynced.
    public func verify(volume name: String) throws -> MirrorInfo {
        let mirror = try mirror(named: name)
        _ = try mirror.startVerify()
        return try info(volume: name)
    }

    /// Sets the largest data payload per frame, validated by the target first.
    public func setFrameSize(volume name: String, bytes: UInt32) async throws -> MirrorInfo {
        let mirror = try mirror(named: name)
        guard (MirrorLimits.minimumFrameSize...MirrorLimits.maximumFrameSize).contains(bytes) else {
            throw ReplicationError(
                .invalidArgument,
                "a frame size must be \(MirrorLimits.minimumFrameSize) to \(MirrorLimits.maximumFrameSize) bytes")
        }
        if mirror.isLinked {
            let handle = mirror.state.withLock { $0.handle }
            do {
                _ = try await mirror.send(.setFrameSize, payload: MirrorHandleValue(handle: handle, value: UInt64(bytes)).payload)
            } catch let error as MirrorRemoteError {
                throw ReplicationError.remote(error, target: mirror.record.target)
            }
        }
        try await mirror.update { $0.frameSize = bytes }
        return try info(volume: name)
    }

    /// The target's answer to a status query (its volumes, full, failed, states).
    public func targetStatus(volume name: String) async throws -> MirrorTargetStatus {
        let mirror = try mirror(named: name)
        guard let secret = settings.secret else { throw ReplicationError(.notConfigured, "no replication secret") }
        let record = mirror.record
        let connection: MirrorConnection
        do {
            connection = try await MirrorConnection.connect(
                host: record.targetHost, port: record.targetPort, secret: secret, node: settings.node, group: settings.group,
                timeout: settings.frameTimeout, tls: settings.tls)
        } catch {
            throw ReplicationError(.unreachable, "cannot reach the target \(record.target): \(error)")
        }
        defer { connection.close() }
        let reply = try await connection.request(.status, payload: ByteBuffer(), timeout: settings.frameTimeout)
        if let error = reply.remoteError() { throw ReplicationError.remote(error, target: record.target) }
        return try MirrorTargetStatus.decode(payload: reply.payload)
    }

    /// On a target: forgets the pairing of VOLUME (its primary is gone for good); the volume stays, as an
    /// ordinary writable volume.
    public func releaseTarget(volume name: String) async throws {
        let id = try engine { try pool.volumes.id(named: name) }
        guard target.isPaired(volumeID: id) else {
            throw ReplicationError(.notFound, "volume '\(name)' is not the target of a mirror on this daemon")
        }
        guard !target.isConnected(volumeID: id) else {
            throw ReplicationError(
                .busy, "volume '\(name)' is being mirrored right now; sever or remove the mirror on its primary instead")
        }
        let target = self.target
        try await executor.run { try target.update(id, command: .remove, value: 0) }
    }

    /// On a target, for failover when the primary is gone: VOLUME becomes writable by hosts, its generation
    /// is bumped, and its primary is fenced off (its next data frame is refused; its next establish
    /// learns of the promotion and must choose `--take-target-changes` or `--discard-target-changes`).
    /// What hosts write here from now on is recorded in the target's change map.
    public func promoteTarget(volume name: String) async throws -> TargetMirrorRecord {
        let id = try engine { try pool.volumes.id(named: name) }
        guard target.isPaired(volumeID: id) else {
            throw ReplicationError(.notFound, "volume '\(name)' is not the target of a mirror on this daemon")
        }
        let target = self.target
        return try await executor.run { try target.promote(volumeID: id) }
    }
}
