import CairnAPI
import Foundation
import Hummingbird
import Logging
import NIOCore

/// The management API: HTTP/1.1 with JSON bodies, on a unix socket (mode 0600) by default, or on a
/// loopback TCP port. Routes are in `APIPath`.
public enum ControlServer {
    /// Where the API listens.
    public enum Endpoint: Sendable, Hashable {
        case unixSocket(path: String)
        case loopback(port: Int)
    }

    /// Builds the HTTP application; run it as a swift-service-lifecycle service. With a `token`, every
    /// call must present it as `Authorization: Bearer TOKEN` (required on TCP, see `Daemon`).
    /// `recentErrors` feeds the status page's "recent errors".
    public static func makeApplication(
        service: any ManagementService, endpoint: Endpoint, token: String? = nil, recentErrors: RecentErrors? = nil,
        logger: Logger, backups: (any BackupService)? = nil
    ) -> some ApplicationProtocol {
        let router = Router()
        router.middlewares.add(RequestLogMiddleware(logger: logger))
        router.middlewares.add(ErrorBodyMiddleware())
        if let token { router.middlewares.add(BearerTokenMiddleware(token: token)) }
        addRoutes(to: router, service: service)
        addStatusRoutes(to: router, service: service, recentErrors: recentErrors, backups: backups)
        if let backups { addBackupRoutes(to: router, service: backups) }
        let address: BindAddress
        switch endpoint {
        case .unixSocket(let path):
            // A socket left behind by a killed daemon would make bind fail; the pool lock already
            // guarantees no other daemon owns this data directory.
            unlink(path)
            address = .unixDomainSocket(path: path)
        case .loopback(let port):
            address = .hostname("127.0.0.1", port: port)
        }
        return Application(
            router: router,
            configuration: ApplicationConfiguration(address: address, serverName: "cairn"),
            onServerRunning: { _ in
                if case .unixSocket(let path) = endpoint { chmod(path, 0o600) }
            },
            logger: logger
        )
    }

    static func addRoutes(to router: Router<BasicRequestContext>, service: any ManagementService) {
        router.get(RouterPath(APIPath.health)) { _, _ in "ok\n" }
        router.get(RouterPath(APIPath.metrics)) { _, _ in
            Response(
                status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                body: ResponseBody(byteBuffer: ByteBuffer(string: try await service.metrics())))
        }
        router.get(RouterPath(APIPath.pool)) { _, _ in try await Encoded(service.poolStatus()) }
        router.post(RouterPath(APIPath.poolCheck)) { request, _ in
            let repair = request.uri.queryParameters.get("repair") == "true"
            return try await Encoded(service.checkPool(repair: repair))
        }
        router.post(RouterPath(APIPath.poolScrub)) { _, _ in
            EditedResponse(status: .accepted, response: Encoded(try await service.startScrub()))
        }
        router.get(RouterPath(APIPath.poolScrub)) { _, _ in try await Encoded(service.scrubReport()) }
        router.post(RouterPath(APIPath.poolScrubRepair)) { _, _ in try await Encoded(service.repairScrubDamage()) }
        router.get(RouterPath(APIPath.volumes)) { _, _ in try await Encoded(service.listVolumes()) }
        router.post(RouterPath(APIPath.volumes)) { request, context in
            let body = try await request.decode(as: CreateVolumeRequest.self, context: context)
            return EditedResponse(status: .created, response: try await Encoded(service.createVolume(body)))
        }
        router.get(RouterPath(APIPath.volumes + "/:name")) { _, context in
            try await Encoded(service.volume(named: context.parameters.require("name")))
        }
        router.patch(RouterPath(APIPath.volumes + "/:name")) { request, context in
            let body = try await request.decode(as: UpdateVolumeRequest.self, context: context)
            return try await Encoded(service.updateVolume(named: context.parameters.require("name"), body))
        }
        router.delete(RouterPath(APIPath.volumes + "/:name")) { request, context in
            let force = request.uri.queryParameters.get("force") == "true"
            try await service.deleteVolume(named: context.parameters.require("name"), force: force)
            return HTTPResponse.Status.noContent
        }
        addSnapshotRoutes(to: router, service: service)
        if let clones = service as? any CloneGroupService { addCloneRoutes(to: router, service: clones) }
        if let mirrors = service as? any MirrorService { addMirrorRoutes(to: router, service: mirrors) }
    }

    static func addSnapshotRoutes(to router: Router<BasicRequestContext>, service: any ManagementService) {
        router.get(RouterPath(APIPath.allSnapshots)) { request, _ in
            try await Encoded(service.listSnapshots(volume: request.uri.queryParameters.get("volume")))
        }
        let snapshots = RouterPath(APIPath.volumes + "/:name/snapshots")
        router.get(snapshots) { _, context in
            try await Encoded(service.listSnapshots(volume: context.parameters.require("name")))
        }
        router.post(snapshots) { request, context in
            let body = try await request.decode(as: CreateSnapshotRequest.self, context: context)
            let snapshot = try await service.createSnapshot(volume: context.parameters.require("name"), name: body.name)
            return EditedResponse(status: .created, response: Encoded(snapshot))
        }
        let one = RouterPath(APIPath.volumes + "/:name/snapshots/:snapshot")
        router.get(one) { _, context in
            try await Encoded(
                service.snapshot(volume: context.parameters.require("name"), name: context.parameters.require("snapshot")))
        }
        router.delete(one) { _, context in
            try await Encoded(
                service.deleteSnapshot(
                    volume: context.parameters.require("name"), name: context.parameters.require("snapshot")))
        }
        router.post(RouterPath(APIPath.volumes + "/:name/snapshots/:snapshot/rollback")) { request, context in
            try await Encoded(
                service.rollback(
                    volume: context.parameters.require("name"), snapshot: context.parameters.require("snapshot"),
                    force: request.uri.queryParameters.get("force") == "true"))
        }
        router.post(RouterPath(APIPath.volumes + "/:name/snapshots/:snapshot/clone")) { request, context in
            let body = try await request.decode(as: CloneRequest.self, context: context)
            let clone = try await service.clone(
                volume: context.parameters.require("name"), snapshot: context.parameters.require("snapshot"),
                as: body.name)
            return EditedResponse(status: .created, response: Encoded(clone))
        }
        router.get(RouterPath(APIPath.volumes + "/:name/changes")) { request, context in
            guard let from = request.uri.queryParameters.get("from") else {
                throw ManagementError(code: "invalid_argument", message: "say which snapshot to compare from (?from=NAME)")
            }
            return try await Encoded(
                service.changes(
                    volume: context.parameters.require("name"), from: from, to: request.uri.queryParameters.get("to")))
        }
        router.post(RouterPath(APIPath.dedup)) { request, context in
            let body = try await request.decode(as: DedupRequest.self, context: context)
            return EditedResponse(status: .accepted, response: Encoded(try await service.startDedup(volumes: body.volumes)))
        }
        router.get(RouterPath(APIPath.stores)) { _, _ in try await Encoded(service.listStores()) }
        router.post(RouterPath(APIPath.stores)) { request, context in
            let body = try await request.decode(as: StoreDTO.self, context: context)
            return EditedResponse(status: .created, response: Encoded(try await service.addStore(body)))
        }
        router.get(RouterPath(APIPath.jobs)) { _, _ in try await Encoded(service.listJobs()) }
        router.get(RouterPath(APIPath.jobs + "/:id")) { _, context in
            try await Encoded(service.job(id: jobID(context)))
        }
        router.post(RouterPath(APIPath.jobs + "/:id/cancel")) { _, context in
            try await Encoded(service.cancelJob(id: jobID(context)))
        }
    }

    static func jobID(_ context: BasicRequestContext) throws -> UInt64 {
        guard let id = UInt64(try context.parameters.require("id")) else {
            throw ManagementError(code: "invalid_argument", message: "a job id is a number")
        }
        return id
    }
}

/// A Codable value as a JSON response.
struct Encoded<Value: Encodable & Sendable>: ResponseGenerator {
    let value: Value
    init(_ value: Value) { self.value = value }

    func response(from request: Request, context: some RequestContext) throws -> Response {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        var body = try encoder.encode(value)
        body.append(0x0A)
        return Response(
            status: .ok, headers: [.contentType: "application/json"],
            body: ResponseBody(byteBuffer: ByteBuffer(bytes: body)))
    }
}
