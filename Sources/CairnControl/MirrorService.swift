import CairnAPI
import Foundation
import Hummingbird
import NIOCore

/// Remote mirrors over the management API. A separate protocol, like `CloneGroupService`,
/// so the core `ManagementService` stays as it is; the daemon's service implements it.
public protocol MirrorService: Sendable {
    func listMirrors() async throws -> [MirrorDTO]
    func mirror(volume: String) async throws -> MirrorDTO
    func establishMirror(_ request: EstablishMirrorRequest) async throws -> MirrorDTO
    func reestablishMirror(_ volume: String, _ request: ReestablishMirrorRequest) async throws -> MirrorDTO
    func severMirror(volume: String) async throws -> MirrorDTO
    func removeMirror(volume: String) async throws
    func setMirrorFrameSize(volume: String, bytes: UInt32) async throws -> MirrorDTO
    func resizeMirror(volume: String, size: UInt64, force: Bool) async throws -> MirrorDTO
    func verifyMirror(volume: String) async throws -> MirrorDTO
    func mirrorTargetStatus(volume: String) async throws -> MirrorTargetStatusDTO
    /// On a target daemon: the volumes other daemons mirror to.
    func listMirrorTargets() async throws -> [MirrorTargetPairingDTO]
    /// On a target daemon: forget the pairing of a volume whose primary is gone.
    func releaseMirrorTarget(volume: String) async throws
    /// On a target daemon, for failover: make a mirrored volume writable here and fence its primary off.
    func promoteMirrorTarget(volume: String) async throws -> MirrorTargetPairingDTO
}

extension ControlServer {
    static func addMirrorRoutes(to router: Router<BasicRequestContext>, service: any MirrorService) {
        router.get(RouterPath(APIPath.mirrors)) { _, _ in try await Encoded(service.listMirrors()) }
        router.get(RouterPath(APIPath.mirrorTargets)) { _, _ in try await Encoded(service.listMirrorTargets()) }
        router.post(RouterPath(APIPath.mirrors)) { request, context in
            let body = try await request.decode(as: EstablishMirrorRequest.self, context: context)
            return EditedResponse(status: .accepted, response: Encoded(try await service.establishMirror(body)))
        }
        let one = RouterPath(APIPath.mirrors + "/:volume")
        router.get(one) { _, context in try await Encoded(service.mirror(volume: context.parameters.require("volume"))) }
        router.delete(one) { _, context in
            try await service.removeMirror(volume: context.parameters.require("volume"))
            return HTTPResponse.Status.noContent
        }
        router.post(RouterPath(APIPath.mirrors + "/:volume/sever")) { _, context in
            try await Encoded(service.severMirror(volume: context.parameters.require("volume")))
        }
        router.post(RouterPath(APIPath.mirrors + "/:volume/re-establish")) { request, context in
            let body = try await request.decode(as: ReestablishMirrorRequest.self, context: context)
            let mirror = try await service.reestablishMirror(context.parameters.require("volume"), body)
            return EditedResponse(status: .accepted, response: Encoded(mirror))
        }
        router.post(RouterPath(APIPath.mirrors + "/:volume/frame-size")) { request, context in
            let body = try await request.decode(as: MirrorFrameSizeRequest.self, context: context)
            return try await Encoded(service.setMirrorFrameSize(volume: context.parameters.require("volume"), bytes: body.bytes))
        }
        router.post(RouterPath(APIPath.mirrors + "/:volume/verify")) { _, context in
            EditedResponse(
                status: .accepted, response: Encoded(try await service.verifyMirror(volume: context.parameters.require("volume"))))
        }
        router.post(RouterPath(APIPath.mirrors + "/:volume/resize")) { request, context in
            let body = try await request.decode(as: MirrorResizeRequest.self, context: context)
            return try await Encoded(
                service.resizeMirror(volume: context.parameters.require("volume"), size: body.size, force: body.force ?? false))
        }
        router.post(RouterPath(APIPath.mirrors + "/:volume/release")) { _, context in
            try await service.releaseMirrorTarget(volume: context.parameters.require("volume"))
            return HTTPResponse.Status.noContent
        }
        router.post(RouterPath(APIPath.mirrors + "/:volume/promote")) { _, context in
            try await Encoded(service.promoteMirrorTarget(volume: context.parameters.require("volume")))
        }
        router.get(RouterPath(APIPath.mirrors + "/:volume/target")) { _, context in
            try await Encoded(service.mirrorTargetStatus(volume: context.parameters.require("volume")))
        }
    }
}
