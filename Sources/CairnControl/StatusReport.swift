import CairnAPI
import Foundation

/// Everything the status page shows, gathered in one pass from the management service (the same calls
/// the API answers, so the page can never say something the API would not).
public struct StatusReport: Sendable {
    public var generatedAt: Date
    public var pool: PoolStatusDTO
    public var volumes: [VolumeDTO]
    public var snapshots: [SnapshotDTO]
    /// Empty when the daemon has no clone groups (or no clone-group service).
    public var clones: [CloneDTO]
    public var jobs: [JobDTO]
    /// Newest first.
    public var errors: [RecentErrors.Entry]
    /// Remote mirrors of this daemon's volumes, and the volumes other daemons mirror here.
    public var mirrors: [MirrorDTO] = []
    public var mirrorTargets: [MirrorTargetPairingDTO] = []
    /// Backups (one-way mirror splits), running and recent.
    public var backups: [BackupDTO] = []

    public init(
        generatedAt: Date, pool: PoolStatusDTO, volumes: [VolumeDTO], snapshots: [SnapshotDTO], clones: [CloneDTO],
        jobs: [JobDTO], errors: [RecentErrors.Entry]
    ) {
        self.generatedAt = generatedAt
        self.pool = pool
        self.volumes = volumes
        self.snapshots = snapshots
        self.clones = clones
        self.jobs = jobs
        self.errors = errors
    }

    static func gather(service: any ManagementService, recentErrors: RecentErrors?) async throws -> StatusReport {
        async let pool = service.poolStatus()
        async let volumes = service.listVolumes()
        async let snapshots = service.listSnapshots(volume: nil)
        async let jobs = service.listJobs()
        let clones = try await (service as? any CloneGroupService)?.listClones(source: nil) ?? []
        var report = StatusReport(
            generatedAt: Date(), pool: try await pool, volumes: try await volumes, snapshots: try await snapshots,
            clones: clones, jobs: try await jobs, errors: recentErrors?.list() ?? [])
        if let mirrors = service as? any MirrorService {
            report.mirrors = try await mirrors.listMirrors()
            report.mirrorTargets = try await mirrors.listMirrorTargets()
        }
        return report
    }

    /// Volumes as trees: roots are volumes that are not clones of a snapshot of another volume here;
    /// under each volume its snapshots, under each snapshot the volumes cloned from it.
    struct VolumeNode {
        var volume: VolumeDTO
        var snapshots: [(snapshot: SnapshotDTO, clones: [VolumeNode])]
    }

    func volumeForest() -> [VolumeNode] {
        let byName = Dictionary(volumes.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        let snapshotsByVolume = Dictionary(grouping: snapshots, by: \.volume)
        let clonesByOrigin = Dictionary(grouping: volumes.filter { $0.origin != nil }, by: { $0.origin! })
        var visited = Set<String>()
        func node(_ volume: VolumeDTO) -> VolumeNode {
            visited.insert(volume.name)
            let snaps = (snapshotsByVolume[volume.name] ?? []).map { snapshot in
                let children = (clonesByOrigin["\(volume.name)@\(snapshot.name)"] ?? [])
                    .filter { !visited.contains($0.name) }
                    .map(node)
                return (snapshot: snapshot, clones: children)
            }
            return VolumeNode(volume: volume, snapshots: snaps)
        }
        // A clone whose origin snapshot is gone (or names a volume not here) is a root of its own.
        let roots = volumes.filter { volume in
            guard let origin = volume.origin else { return true }
            let parts = origin.split(separator: "@", maxSplits: 1).map(String.init)
            guard parts.count == 2, byName[parts[0]] != nil else { return true }
            return !(snapshotsByVolume[parts[0]] ?? []).contains { $0.name == parts[1] }
        }
        let trees = roots.map(node)
        // Anything a cycle of origins kept out of every tree still gets shown.
        return trees + volumes.filter { !visited.contains($0.name) }.map(node)
    }
}
