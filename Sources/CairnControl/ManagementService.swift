import CairnAPI

/// What the management API can ask of the daemon. The daemon implements it over the storage engine;
/// this module only speaks HTTP and JSON.
public protocol ManagementService: Sendable {
    func poolStatus() async throws -> PoolStatusDTO
    func checkPool(repair: Bool) async throws -> PoolCheckDTO
    func listVolumes() async throws -> [VolumeDTO]
    func volume(named name: String) async throws -> VolumeDTO
    func createVolume(_ request: CreateVolumeRequest) async throws -> VolumeDTO
    func updateVolume(named name: String, _ request: UpdateVolumeRequest) async throws -> VolumeDTO
    func deleteVolume(named name: String, force: Bool) async throws

    func listSnapshots(volume: String?) async throws -> [SnapshotDTO]
    func snapshot(volume: String, name: String) async throws -> SnapshotDTO
    func createSnapshot(volume: String, name: String) async throws -> SnapshotDTO
    func deleteSnapshot(volume: String, name: String) async throws -> SnapshotDeletionDTO
    func rollback(volume: String, snapshot: String, force: Bool) async throws -> VolumeDTO
    func clone(volume: String, snapshot: String, as name: String) async throws -> VolumeDTO
    func changes(volume: String, from: String, to: String?) async throws -> ChangesDTO

    func startDedup(volumes: [String]) async throws -> JobDTO
    /// Starts a scrub of every volume's data against its checksums.
    func startScrub() async throws -> JobDTO
    /// The last scrub's report (not_found before the first).
    func scrubReport() async throws -> ScrubReportDTO
    /// Repairs the last scrub's damage from the volumes' mirror targets where they hold a trusted copy.
    func repairScrubDamage() async throws -> ScrubRepairDTO
    func listStores() async throws -> [StoreDTO]
    func addStore(_ store: StoreDTO) async throws -> StoreDTO
    func listJobs() async throws -> [JobDTO]
    func job(id: UInt64) async throws -> JobDTO
    func cancelJob(id: UInt64) async throws -> JobDTO

    /// Every metric in the Prometheus text exposition format.
    func metrics() async throws -> String
}

/// A refusal or failure the API reports to its client: a stable code and a sentence to act on.
public struct ManagementError: Error, Sendable {
    /// Stable code (see `ManagementError.status(for:)` for the HTTP status each one maps to).
    public var code: String
    public var message: String

    public init(code: String, message: String) {
        self.code = code
        self.message = message
    }
}
