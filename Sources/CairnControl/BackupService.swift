import CairnAPI
import Foundation
import Hummingbird
import NIOCore

/// Consistent backups over the management API. A separate protocol so that the core
/// `ManagementService` stays as it is; the daemon passes it to `ControlServer.makeApplication`.
public protocol BackupService: Sendable {
    func listBackups() async throws -> [BackupDTO]
    func backup(id: String) async throws -> BackupDTO
    func startBackup(_ request: StartBackupRequest) async throws -> BackupDTO
    func sealBackup(id: String) async throws -> BackupDTO
    /// Checks what can be refused at once, then restores in a job (returned).
    func restoreBackup(_ request: RestoreBackupRequest) async throws -> JobDTO
}

extension ControlServer {
    static func addBackupRoutes(to router: Router<BasicRequestContext>, service: any BackupService) {
        router.get(RouterPath(APIPath.backups)) { _, _ in try await Encoded(service.listBackups()) }
        router.post(RouterPath(APIPath.backups)) { request, context in
            let body = try await request.decode(as: StartBackupRequest.self, context: context)
            return EditedResponse(status: .accepted, response: Encoded(try await service.startBackup(body)))
        }
        router.get(RouterPath(APIPath.backups + "/:id")) { _, context in
            try await Encoded(service.backup(id: context.parameters.require("id")))
        }
        router.post(RouterPath(APIPath.backups + "/:id/seal")) { _, context in
            try await Encoded(service.sealBackup(id: context.parameters.require("id")))
        }
        router.post(RouterPath(APIPath.restores)) { request, context in
            let body = try await request.decode(as: RestoreBackupRequest.self, context: context)
            return EditedResponse(status: .accepted, response: Encoded(try await service.restoreBackup(body)))
        }
    }
}
