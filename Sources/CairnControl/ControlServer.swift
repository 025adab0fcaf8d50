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

    /// Builds the HTTP application; run it as a swift-service-lifecycle service.
    public static func makeApplication(
        service: any ManagementService, endpoint: Endpoint, logger: Logger
    ) -> some ApplicationProtocol {
        let router = Router()
        router.middlewares.add(ErrorBodyMiddleware())
        addRoutes(to: router, service: service)
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
        router.get(RouterPath(APIPath.pool)) { _, _ in try await Encoded(service.poolStatus()) }
        router.post(RouterPath(APIPath.poolCheck)) { request, _ in
            let repair = request.uri.queryParameters.get("repair") == "true"
            return try await Encoded(service.checkPool(repair: repair))
        }
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
