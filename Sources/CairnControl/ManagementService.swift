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
