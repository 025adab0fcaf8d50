import CairnAPI
import CairnBackup
import CairnControl
import CairnEngine
import CairnIO
import CairnReplication
import Foundation

/// The management API's service over the pool: runs each engine call on the I/O executor and turns
/// engine errors into API errors with the same codes.
struct PoolManagement: ManagementService {
    let pool: Pool
    let executor: IOExecutor
    /// "host:port" of the NBD listener, for export URIs.
    let nbdAddress: String
    let metricsRegistry: DaemonMetrics
    /// Open NBD connections, for the metrics.
    let connectionCount: @Sendable () -> Int
    /// True when the export needs TLS (TLS required, or a TLS-only export under selective TLS): its URI
    /// is then `nbds://`, as libnbd and qemu write it.
    var requiresTLS: @Sendable (String) -> Bool = { _ in false }

    func exportURI(_ export: String) -> String {
        "\(requiresTLS(export) ? "nbds" : "nbd")://\(nbdAddress)/\(export)"
    }
    /// Remote mirrors (PoolManagement+Mirrors.swift).
    var replication: Replication? = nil
    /// Backups in progress, which pin their volume (`refuseIfBackingUp`).
    var backups: BackupCoordinator? = nil
    /// Where the pool lives and, on a cluster, its health and fullness (Daemon+RADOS.swift).
    var backendStatus: (@Sendable () -> PoolBackendDTO)? = nil
    /// NBD connections and iSCSI sessions open now, for the pool status and the status page.
    var protocolSessions: (@Sendable () -> ProtocolSessions)? = nil

    /// A volume a backup splits keeps its size, name, content history and existence until the backup ends.
    func refuseIfBackingUp(_ volume: String, _ action: String) throws {
        guard let id = backups?.runningBackup(ofVolume: volume) else { return }
        throw ManagementError(
            code: "busy",
            message: "volume '\(volume)' cannot be \(action) while backup \(id) runs; wait for it (`cairn backup "
                + "status \(id)`) or end its drain with `cairn backup seal \(id)`")
    }

    func metrics() async throws -> String {
        let status = try await poolStatus()
        let volumes = try await listVolumes()
        let jobs = try await listJobs()
        return metricsRegistry.render(
            pool: status, volumes: volumes, jobs: jobs, connections: connectionCount(), mirrors: replication?.list() ?? [],
            backups: backups?.metricSamples())
    }

    func run<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
        // The executor's thread is not the request's task: carry the request id over so the engine's log
        // lines for this call say which request they belong to.
        let request = RequestScope.requestID
        do {
            return try await executor.run { try RequestScope.run(in: request, work) }
        } catch let error as EngineError {
            throw ManagementError(code: error.code.rawValue, message: error.message)
        }
    }

    func poolStatus() async throws -> PoolStatusDTO {
        let status = try await run { pool.status() }
        var dto = PoolStatusDTO(
            poolID: status.poolID, dataDirectory: status.location, copyMethod: status.copyMethod.rawValue,
            volumeCount: status.volumeCount, provisionedBytes: status.provisionedBytes, usedBytes: status.usedBytes,
            sharedBytes: status.sharedBytes, pendingFreeBytes: status.pendingFreeBytes, fileBytes: status.fileBytes,
            filesystemAvailableBytes: status.filesystemAvailableBytes, failure: status.failure, nbdAddress: nbdAddress,
            bytesWritten: status.bytesWritten, bytesCopied: status.bytesCopied, bytesZeroed: status.bytesZeroed,
            bytesRead: status.bytesRead, dataWrites: status.dataWrites.rawValue)
        dto.dataChecksums = status.dataChecksums
        dto.checksumMismatches = status.checksumMismatches
        dto.uncheckedData = status.uncheckedDataSinceBeforeChecksums
        dto.immediateWrites = status.immediateWrites
        dto.immediateWritesThrottled = status.immediateWritesThrottled
        if let backendStatus { dto.backend = try await run { backendStatus() } }
        if let sessions = protocolSessions?() {
            dto.nbdConnections = sessions.nbdConnections
            dto.iscsiAddress = sessions.iscsiAddress
            dto.iscsiSessions = sessions.iscsiAddress == nil ? nil : sessions.iscsi
        }
        return dto
    }

    func checkPool(repair: Bool) async throws -> PoolCheckDTO {
        let r = try await run { try pool.checker.check(repair: repair) }
        return PoolCheckDTO(
            healthy: r.isHealthy, volumes: r.volumes, snapshots: r.snapshots, mappings: r.mappings,
            referencedSlots: r.referencedSlots, leakedSlots: r.leakedSlots, leakedBytes: r.leakedBytes,
            repairedSlots: r.repairedSlots, errors: r.errors)
    }

    func listVolumes() async throws -> [VolumeDTO] {
        try await run { pool.volumes.list() }.map(dto)
    }

    func volume(named name: String) async throws -> VolumeDTO {
        dto(try await run { try pool.volumes.info(named: name) })
    }

    func createVolume(_ request: CreateVolumeRequest) async throws -> VolumeDTO {
        dto(
            try await run {
                try pool.volumes.create(
                    name: request.name, size: request.size, chunkSize: request.chunkSize,
                    preserveStore: request.preserveStore)
            })
    }

    func updateVolume(named name: String, _ request: UpdateVolumeRequest) async throws -> VolumeDTO {
        guard request.size != nil || request.name != nil || request.preserveStore != nil else {
            throw ManagementError(
                code: "invalid_argument", message: "nothing to change: give a new size, a new name or a preserve store")
        }
        if request.size != nil { try refuseIfMirrored(name, "resized") }
        if request.size != nil { try refuseIfBackingUp(name, "resized") }
        if request.name != nil { try refuseIfBackingUp(name, "renamed") }
        return dto(
            try await run {
                var current = name
                if let size = request.size {
                    try pool.volumes.resize(name: current, size: size, force: request.force ?? false)
                }
                if let newName = request.name {
                    try pool.volumes.rename(from: current, to: newName)
                    current = newName
                }
                if let store = request.preserveStore {
                    try pool.stores.setPreserveStore(volume: current, store: store.isEmpty ? nil : store)
                }
                return try pool.volumes.info(named: current)
            })
    }

    func deleteVolume(named name: String, force: Bool) async throws {
        try refuseIfMirrored(name, "deleted")
        try refuseIfBackingUp(name, "deleted")
        try await run { try pool.volumes.delete(name: name, force: force) }
    }

    func dto(_ info: VolumeInfo) -> VolumeDTO {
        VolumeDTO(
            name: info.name, size: info.size, chunkSize: info.chunkSize, allocatedBytes: info.allocatedBytes,
            snapshotCount: info.snapshotCount, attachments: info.attachments,
            createdAt: Self.timestamp(milliseconds: info.createdAt), origin: info.origin,
            exportURI: exportURI(info.name), preserveStore: info.preserveStore)
    }
}
