import CairnAPI
import Foundation
import Hummingbird
import NIOCore

/// Clone groups over the management API. A separate protocol so that the core
/// `ManagementService` stays as it is; the daemon's service implements both.
public protocol CloneGroupService: Sendable {
    func listClones(source: String?) async throws -> [CloneDTO]
    func clone(named name: String) async throws -> CloneDTO
    func addClone(_ request: AddCloneRequest) async throws -> CloneDTO
    func removeClone(named name: String, deleteVolume: Bool) async throws
    func fractureClone(named name: String) async throws -> CloneDTO
    func syncClone(named name: String) async throws -> CloneDTO
    func reverseSyncClone(named name: String) async throws -> CloneDTO
    func restoreClone(named name: String, protected: Bool) async throws -> CloneDTO
}

extension ControlServer {
    static func addCloneRoutes(to router: Router<BasicRequestContext>, service: any CloneGroupService) {
        router.get(RouterPath(APIPath.clones)) { request, _ in
            try await Encoded(service.listClones(source: request.uri.queryParameters.get("source")))
        }
        router.post(RouterPath(APIPath.clones)) { request, context in
            let body = try await request.decode(as: AddCloneRequest.self, context: context)
            return EditedResponse(status: .accepted, response: Encoded(try await service.addClone(body)))
        }
        let one = RouterPath(APIPath.clones + "/:name")
        router.get(one) { _, context in
            try await Encoded(service.clone(named: context.parameters.require("name")))
        }
        router.delete(one) { request, context in
            try await service.removeClone(
                named: context.parameters.require("name"),
                deleteVolume: request.uri.queryParameters.get("delete-volume") == "true")
            return HTTPResponse.Status.noContent
        }
        router.post(RouterPath(APIPath.clones + "/:name/fracture")) { _, context in
            try await Encoded(service.fractureClone(named: context.parameters.require("name")))
        }
        router.post(RouterPath(APIPath.clones + "/:name/sync")) { _, context in
            EditedResponse(
                status: .accepted, response: Encoded(try await service.syncClone(named: context.parameters.require("name"))))
        }
        router.post(RouterPath(APIPath.clones + "/:name/reverse-sync")) { _, context in
            EditedResponse(
                status: .accepted,
                response: Encoded(try await service.reverseSyncClone(named: context.parameters.require("name"))))
        }
        router.post(RouterPath(APIPath.clones + "/:name/restore")) { request, context in
            let body = try await request.decode(as: RestoreCloneRequest.self, context: context)
            let clone = try await service.restoreClone(named: context.parameters.require("name"), protected: body.protected)
            return EditedResponse(status: .accepted, response: Encoded(clone))
        }
    }
}
