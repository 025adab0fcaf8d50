import CairnAPI
import CairnControl
import CairnEngine
import CairnReplication
import MirrorProtocol
import Foundation

extension PoolManagement: MirrorService {
    func mirrors() throws -> Replication {
        guard let replication else {
            throw ManagementError(code: "not_configured", message: "this daemon has no replication layer")
        }
        return replication
    }

    /// Replication errors keep their stable codes.
    func mirrorCall<T: Sendable>(_ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch let error as ReplicationError {
            throw ManagementError(code: error.code.rawValue, message: error.message)
        }
    }

    /// Changes that would alter a mirrored volume behind its mirror's back (its size, its data all at once,
    /// its existence) are refused while it is a primary or a paired target.
    func refuseIfMirrored(_ volume: String, _ action: String) throws {
        guard let replication, let id = try? pool.volumes.id(named: volume) else { return }
        if replication.primary(volumeID: id) != nil {
            throw ManagementError(
                code: "busy",
                message: action == "resized"
                    ? "volume '\(volume)' is mirrored: resize both sides with `cairn mirror resize \(volume) SIZE`"
                    : "volume '\(volume)' is mirrored and cannot be \(action); `cairn mirror remove \(volume)` first")
        }
        if replication.target.isPaired(volumeID: id) {
            throw ManagementError(
                code: "busy",
                message: "volume '\(volume)' is the target of a mirror and cannot be \(action); remove the mirror on its primary first")
        }
    }

    func listMirrors() async throws -> [MirrorDTO] { try mirrors().list().map(dto) }

    func mirror(volume: String) async throws -> MirrorDTO {
        try await mirrorCall { dto(try mirrors().info(volume: volume)) }
    }

    func establishMirror(_ request: EstablishMirrorRequest) async throws -> MirrorDTO {
        try await mirrorCall {
            dto(
                try await mirrors().establish(
                    volume: request.volume, target: request.target, extentSize: request.extentSize,
                    discardTargetChanges: request.discardTargetChanges ?? false, asynchronousLag: request.asynchronousLag))
        }
    }

    func reestablishMirror(_ volume: String, _ request: ReestablishMirrorRequest) async throws -> MirrorDTO {
        try await mirrorCall {
            dto(
                try await mirrors().reestablish(
                    volume: volume, discardTargetChanges: request.discardTargetChanges ?? false,
                    takeTargetChanges: request.takeTargetChanges ?? false, checksum: request.checksum ?? false))
        }
    }

    func severMirror(volume: String) async throws -> MirrorDTO {
        try await mirrorCall { dto(try await mirrors().sever(volume: volume)) }
    }

    func removeMirror(volume: String) async throws {
        try await mirrorCall { try await mirrors().remove(volume: volume) }
    }

    func setMirrorFrameSize(volume: String, bytes: UInt32) async throws -> MirrorDTO {
        try await mirrorCall { dto(try await mirrors().setFrameSize(volume: volume, bytes: bytes)) }
    }

    func mirrorTargetStatus(volume: String) async throws -> MirrorTargetStatusDTO {
        try await mirrorCall {
            let status = try await mirrors().targetStatus(volume: volume)
            return MirrorTargetStatusDTO(
                availableBytes: status.availableBytes,
                volumes: status.volumes.map {
                    .init(
                        name: $0.name, size: $0.size, allocatedBytes: $0.allocatedBytes, role: $0.role, state: $0.state,
                        full: $0.full, failed: $0.failed)
                })
        }
    }

    func resizeMirror(volume: String, size: UInt64, force: Bool) async throws -> MirrorDTO {
        try await mirrorCall { dto(try await mirrors().resize(volume: volume, size: size, force: force)) }
    }

    func verifyMirror(volume: String) async throws -> MirrorDTO {
        try await mirrorCall { dto(try mirrors().verify(volume: volume)) }
    }

    func listMirrorTargets() async throws -> [MirrorTargetPairingDTO] {
        let replication = try mirrors()
        return replication.targetPairings().map { pairing(volume: $0.volume, record: $0.record, connected: $0.connected, replication) }
    }

    func pairing(volume: String, record: TargetMirrorRecord, connected: Bool, _ replication: Replication)
        -> MirrorTargetPairingDTO
    {
        var dto = MirrorTargetPairingDTO(
            volume: volume, primaryNode: record.primaryNode,
            state: record.promoted
                ? "promoted" : record.severed ? "severed" : (connected ? "mirrored" : "fractured"),
            readOnly: !record.severed, modified: record.modified, generation: String(record.generation, radix: 16))
        dto.promoted = record.promoted
        dto.promotedGeneration = record.promotedGeneration.map { String($0, radix: 16) }
        dto.changedExtents = replication.target.changedExtents(volumeID: record.volumeID)
        return dto
    }

    func promoteMirrorTarget(volume: String) async throws -> MirrorTargetPairingDTO {
        try await mirrorCall {
            let replication = try mirrors()
            let record = try await replication.promoteTarget(volume: volume)
            return pairing(volume: volume, record: record, connected: false, replication)
        }
    }

    func releaseMirrorTarget(volume: String) async throws {
        try await mirrorCall { try await mirrors().releaseTarget(volume: volume) }
    }

    func dto(_ info: MirrorInfo) -> MirrorDTO {
        var mirror = MirrorDTO(
            volume: info.volume, target: info.target, state: info.state, extentSize: info.extentSize,
            extentCount: info.extentCount, changedExtents: info.changedExtents, dirtyExtents: info.dirtyExtents,
            lagBytes: info.dirtyExtents * info.extentSize, frameSize: info.frameSize, connected: info.connected,
            job: info.jobID.flatMap { pool.jobs.job($0) }.map(Self.dto), lastError: info.lastError,
            fractures: info.fractures, retransmissions: info.retransmissions, bytesReplicated: info.bytesReplicated,
            pairID: String(info.pairID, radix: 16), generation: String(info.generation, radix: 16),
            syncedGeneration: String(info.syncedGeneration, radix: 16))
        mirror.mode = info.asynchronousLagLimit == nil ? "synchronous" : "asynchronous"
        mirror.asynchronousLagLimit = info.asynchronousLagLimit
        mirror.unacknowledgedBytes = info.asynchronousLagLimit == nil ? nil : info.unacknowledgedBytes
        mirror.throughputBytesPerSecond = UInt64(max(0, info.throughput))
        mirror.role = "primary"
        mirror.takingTargetChanges = info.takingTargetChanges
        mirror.pullExtents = info.takingTargetChanges ? info.pullExtents : nil
        mirror.lastResync = info.lastResync.map {
            MirrorResyncResultDTO(compared: $0.compared, sent: $0.sent, skipped: $0.skipped, pulled: $0.pulled)
        }
        return mirror
    }
}
