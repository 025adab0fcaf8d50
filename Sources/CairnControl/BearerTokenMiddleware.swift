import CairnAPI
import Hummingbird

/// Requires `Authorization: Bearer TOKEN` on every call. Used when the API listens on TCP: a unix socket
/// is guarded by its file mode (0600), but any local user can connect to a loopback port.
struct BearerTokenMiddleware<Context: RequestContext>: RouterMiddleware {
    let token: String

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws
        -> Response
    {
        let presented = request.headers[.authorization].flatMap { value -> Substring? in
            guard value.hasPrefix(Self.scheme) else { return nil }
            return value.dropFirst(Self.scheme.count)
        }
        guard let presented, Self.equalInConstantTime(presented.utf8, token.utf8) else {
            return ErrorBodyMiddleware<Context>.response(
                code: "unauthorized",
                message: "this API needs its token: pass --api-token (or set CAIRN_API_TOKEN); the daemon wrote it "
                    + "to api.token in its data directory",
                status: .unauthorized)
        }
        return try await next(request, context)
    }

    static var scheme: String { "Bearer " }

    /// Compares without returning early on the first difference, so timing says nothing about the token.
    static func equalInConstantTime(_ a: some Collection<UInt8>, _ b: some Collection<UInt8>) -> Bool {
        guard a.count == b.count else { return false }
        var difference: UInt8 = 0
        for (x, y) in zip(a, b) { difference |= x ^ y }
        return difference == 0
    }
}
