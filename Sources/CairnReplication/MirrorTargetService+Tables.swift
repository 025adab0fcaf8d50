import CairnEngine
import Logging
import MirrorProtocol
import Synchronization

extension MirrorTargetService {
    /// Validates an establish frame against the pool and the pairing records, then records the pairing.
    /// Blocking (engine calls, a durable record write): on an I/O thread.
    func establish(_ request: MirrorEstablishRequest, connection: ObjectIdentifier, node: String) throws
        -> MirrorEstablishReply
    {
        let name = request.volume
        let discard = request.options.contains(.discardTargetChanges)
        let status = pool.status()
        if let failure = status.failure {
            throw MirrorRemoteError(.targetFailed, "the target's pool has failed and accepts no writes: \(failure)")
        }
        let available = status.filesystemAvailableBytes ?? .max
        var created = false
        let info: VolumeInfo
        if let existing = pool.volumes.list().first(where: { $0.name == name }) {
            guard existing.size == request.size else {
                throw MirrorRemoteError(
                    .sizeMismatch,
                    "volume '\(name)' is \(existing.size) bytes on the target but the primary's is \(request.size) bytes")
            }
            guard existing.chunkSize == request.chunkSize else {
                throw MirrorRemoteError(
                    .sizeMismatch,
                    "volume '\(name)' has \(existing.chunkSize)-byte chunks on the target but the primary's has \(request.chunkSize)")
            }
            // Sessions opened while the volume was paired and not severed are read-only (`isProtected`):
            // only a volume that hosts could have opened read-write is refused while attached.
            let protected = state.withLock { $0.records[existing.id].map { !$0.severed } ?? false }
            guard existing.attachments == 0 || protected else {
                throw MirrorRemoteError(
                    .volumeInUse, "volume '\(name)' is attached by \(existing.attachments) host session(s) on the target")
            }
            let needed = request.requiredBytes > existing.allocatedBytes ? request.requiredBytes - existing.allocatedBytes : 0
            guard available >= needed else {
                throw MirrorRemoteError(
                    .noSpace, "the target's pool has \(available) bytes free but volume '\(name)' needs \(needed) more")
            }
            info = existing
        } else {
            guard request.options.contains(.create) else {
                throw MirrorRemoteError(.unknownVolume, "there is no volume named '\(name)' on the target")
            }
            guard available >= request.requiredBytes else {
                throw MirrorRemoteError(
                    .noSpace,
                    "the target's pool has \(available) bytes free but the primary volume holds \(request.requiredBytes)")
            }
            info = try engineCall {
                try pool.volumes.create(name: name, size: request.size, chunkSize: request.chunkSize)
            }
            created = true
        }
        let current = state.withLock { $0.records[info.id] }
        let take = request.options.contains(.takeTargetChanges)
        guard !(take && discard) else {
            throw MirrorRemoteError(.invalidArgument, "take or discard the target's changes, not both")
        }
        var fullSync = created ? false : true
        // Whether the target keeps its change map and `modified` (the primary is taking its changes).
        var keepChanges = false
        if let current {
            if current.pairID != request.generations.pairID {
                guard discard else {
                    throw MirrorRemoteError(
                        .volumeInUse, "volume '\(name)' is already the mirror of another primary volume (from \(current.primaryNode))")
                }
            } else if request.options.contains(.initial) {
                fullSync = true
            } else {
                // The target holds the primary's last synchronized generation, or its current one: the
                // primary told it "in sync at G" (after every extent was copied) and stopped before it
                // recorded G as synchronized itself. Its change map still lists whatever changed since.
                let known = current.generation == request.generations.synced
                    || current.generation == request.generations.current
                if !known && !discard {
                    throw MirrorRemoteError(
                        .diverged,
                        "volume '\(name)' holds generation \(String(current.generation, radix: 16)) but the primary last synchronized generation \(String(request.generations.synced, radix: 16)); only --discard-target-changes can resume (a full copy from the primary)")
                }
                if current.changedHere && !discard && !take {
                    let how = current.promoted == true ? "was promoted and written on the target" : "was written on the target while the mirror was severed"
                    throw MirrorRemoteError(
                        .targetChanged, current.modified ? "volume '\(name)' \(how)" : "volume '\(name)' was promoted on the target")
                }
                if take && current.writtenDuringTake == true {
                    throw MirrorRemoteError(
                        .diverged,
                        "volume '\(name)' was written on the target again while the primary was taking its earlier changes; those newest writes are not in the set being taken")
                }
                keepChanges = take && current.changedHere
                fullSync = discard && (!known || current.changedHere)
            }
        } else if !created {
            if !request.options.contains(.initial) {
                guard discard else {
                    throw MirrorRemoteError(
                        .diverged, "volume '\(name)' on the target has no record of this mirror (it was removed or replaced)")
                }
            } else if info.allocatedBytes > 0 && !discard {
                throw MirrorRemoteError(
                    .volumeInUse,
                    "volume '\(name)' on the target already holds \(info.allocatedBytes) bytes of data that mirroring would overwrite")
            }
        }
        // Kept until `synchronized`: the primary copies the extents it lists, and may reconnect meanwhile.
        var record = TargetMirrorRecord(
            volumeID: info.id, pairID: request.generations.pairID, generation: request.generations.synced,
            modified: keepChanges, severed: false, primaryNode: node)
        if keepChanges { record.takeInProgress = true }
        do {
            try recordUpdates.withLock { _ in
                try store.save(record, to: store.targetPath(info.id))
                state.withLock { $0.records[info.id] = record }
            }
            if !keepChanges { try removeChangeMap(info.id) }
        } catch {
            if created { try? pool.volumes.delete(name: name, force: true) }
            throw MirrorRemoteError(.targetFailed, "cannot record the pairing on the target: \(error)")
        }
        state.withLock { s in
            s.records[info.id] = record
            s.owners[info.id] = connection
            s.cleanSevered.remove(info.id)
        }
        logger.info(
            "mirror target paired", metadata: ["volume": "\(name)", "primary": "\(node)", "created": "\(created)"])
        return MirrorEstablishReply(handle: info.id, created: created, fullSyncNeeded: fullSync)
    }

    /// synchronized, sever, remove: record updates. Blocking.
    func update(_ volume: UInt64, command: MirrorCommand, value: UInt64) throws {
        try recordUpdates.withLock { _ in try updateSerialized(volume, command: command, value: value) }
    }

    private func updateSerialized(_ volume: UInt64, command: MirrorCommand, value: UInt64) throws {
        guard var record = state.withLock({ $0.records[volume] }) else {
            throw MirrorRemoteError(.badAddress, "volume \(volume) is not paired on the target")
        }
        switch command {
        case .synchronized:
            record.generation = value
            record.modified = false
            record.promoted = nil
            record.promotedGeneration = nil
            record.takeInProgress = nil
            record.writtenDuringTake = nil
        case .sever:
            record.severed = true
        default:
            try store.remove(store.targetPath(volume))
            state.withLock { s in
                s.records[volume] = nil
                s.cleanSevered.remove(volume)
            }
            try removeChangeMap(volume)
            return
        }
        try store.save(record, to: store.targetPath(volume))
        state.withLock { s in
            s.records[volume] = record
            if record.severed && !record.modified { s.cleanSevered.insert(volume) }
        }
        // The primary holds what the map listed (it copied it back, or the record says nothing changed).
        if command == .synchronized { try removeChangeMap(volume) }
    }

    /// The target's change map for the primary (`targetChanges`): empty when hosts wrote nothing here.
    /// Blocking.
    func changes(_ volume: UInt64) throws -> MirrorTargetChanges {
        let (map, record) = state.withLock { ($0.maps[volume], $0.records[volume]) }
        guard let map else {
            if record?.modified == true {
                // Written by a version that kept no map here: which extents changed is unknown.
                throw MirrorRemoteError(
                    .targetFailed,
                    "the target volume was written without a change map, so its changes cannot be taken; use --discard-target-changes or copy the volume")
            }
            return MirrorTargetChanges(extentSize: Self.changeMapExtentSize, extentCount: 0, words: [])
        }
        return MirrorTargetChanges(extentSize: map.extentSize, extentCount: map.extentCount, words: map.dirtyWords)
    }

    func resize(_ volume: UInt64, to size: UInt64) throws {
        guard let info = pool.volumes.list().first(where: { $0.id == volume }) else {
            throw MirrorRemoteError(.unknownVolume, "volume \(volume) no longer exists on the target")
        }
        _ = try engineCall { try pool.volumes.resize(name: info.name, size: size, force: true) }
    }

    func status() -> MirrorTargetStatus {
        let pool = self.pool.status()
        let (records, owners) = state.withLock { ($0.records, $0.owners) }
        let volumes = self.pool.volumes.list().map { info in
            let record = records[info.id]
            let state: String
            if let record {
                state = record.severed ? "severed" : (owners[info.id] != nil ? "mirrored" : "fractured")
            } else {
                state = ""
            }
            return MirrorTargetStatus.Volume(
                name: info.name, size: info.size, allocatedBytes: info.allocatedBytes,
                role: record == nil ? "none" : (record?.promoted == true ? "promoted" : "target"), state: state,
                // Full: a write needing a fresh chunk would fail (the pool keeps its reserve for metadata).
                full: (pool.filesystemAvailableBytes ?? .max) <= PoolOptions().reservedBytes + UInt64(info.chunkSize),
                failed: pool.failure != nil)
        }
        return MirrorTargetStatus(availableBytes: pool.filesystemAvailableBytes ?? 0, volumes: volumes)
    }

    private func engineCall<T>(_ body: () throws -> T) throws -> T {
        do { return try body() } catch { throw Self.remote(error) }
    }
}
