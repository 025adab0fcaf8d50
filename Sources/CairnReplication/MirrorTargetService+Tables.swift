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
        let pairing = MirrorTargetMachine.Establish(
            volume: name, generations: request.generations, options: request.options, node: node, created: created,
            allocatedBytes: info.allocatedBytes)
        let transition: Transition
        do {
            transition = try apply(.establish(pairing), volumeID: info.id, connection: connection)
        } catch {
            if created { deleteRefusedVolume(name) }
            throw MirrorRemoteError(.targetFailed, "cannot record the pairing on the target: \(error)")
        }
        switch transition.outcome {
        case .refused(let reason):
            if created { deleteRefusedVolume(name) }
            throw reason
        case .accepted(let actions):
            logger.info(
                "mirror target paired", metadata: ["volume": "\(name)", "primary": "\(node)", "created": "\(created)"])
            let fullSync = actions.contains(.answerEstablish(fullSyncNeeded: true))
            return MirrorEstablishReply(handle: info.id, created: created, fullSyncNeeded: fullSync)
        }
    }

    /// A volume made for an establish that was then refused: it holds nothing yet, so it goes again. A
    /// failure to delete it is only logged (the refusal is the answer; the operator can delete it).
    private func deleteRefusedVolume(_ name: String) {
        do {
            try pool.volumes.delete(name: name, force: true)
        } catch {
            logger.warning(
                "could not delete the volume made for a refused establish",
                metadata: ["volume": "\(name)", "error": "\(error)"])
        }
    }

    /// synchronized, sever, remove: record updates. Blocking.
    func update(_ volume: UInt64, command: MirrorCommand, value: UInt64) throws {
        let event: MirrorTargetMachine.Event
        switch command {
        case .synchronized: event = .synchronized(generation: value)
        case .sever: event = .sever
        default: event = .remove
        }
        if case .refused(let reason) = try apply(event, volumeID: volume).outcome { throw reason }
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
