import CairnAPI
import Crypto
import Foundation
import Hummingbird

/// Requires `Authorization: Bearer TOKEN` on every call. Used when the API listens on TCP: a unix socket
/// is guarded by its file mode (0600), but any local user can connect to a loopback port.
///
/// A browser cannot send that header, so the read-only status page has its own way in: opening
/// `/status?token=TOKEN` once sets a cookie and redirects to `/status` (the token leaves the address
/// bar and the history). The cookie holds not the token but a key derived from it that opens the
/// status page alone (`Path=/status`, `HttpOnly`, `SameSite=Strict`): a leaked cookie cannot change
/// anything.
struct BearerTokenMiddleware<Context: RequestContext>: RouterMiddleware {
    let token: String

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws
        -> Response
    {
        if request.method == .get, request.uri.path == APIPath.statusPage {
            if let offered = request.uri.queryParameters.get("token") {
                guard Self.equalInConstantTime(offered.utf8, token.utf8) else { return Self.refusal() }
                return Response(
                    status: .seeOther,
                    headers: [
                        .location: APIPath.statusPage,
                        .setCookie:
                            "\(Self.cookieName)=\(statusKey); Path=\(APIPath.statusPage); Max-Age=\(Self.cookieSeconds); "
                            + "HttpOnly; SameSite=Strict",
                        .cacheControl: "no-store",
                    ])
            }
            if let cookie = Self.cookie(Self.cookieName, in: request), Self.equalInConstantTime(cookie.utf8, statusKey.utf8) {
                return try await next(request, context)
            }
        }
        let presented = request.headers[.authorization].flatMap { value -> Substring? in
            guard value.hasPrefix(Self.scheme) else { return nil }
            return value.dropFirst(Self.scheme.count)
        }
        guard let presented, Self.equalInConstantTime(presented.utf8, token.utf8) else { return Self.refusal() }
        return try await next(request, context)
    }

    static func refusal() -> Response {
        ErrorBodyMiddleware<Context>.response(
            code: "unauthorized",
            message: "this API needs its token: pass --api-token (or set CAIRN_API_TOKEN); the daemon wrote it "
                + "to api.token in its data directory (a browser opens /status?token=TOKEN)",
            status: .unauthorized)
    }

    static var scheme: String { "Bearer " }
    static var cookieName: String { "cairn_status" }
    /// A working day: a wall display keeps refreshing without the token again; a new token (the file
    /// changed and the daemon restarted) invalidates it at once, since the key derives from the token.
    static var cookieSeconds: Int { 12 * 3600 }

    /// HMAC-SHA256(token, "cairn status page"), hex: opens the status page, nothing else.
    var statusKey: String {
        let code = HMAC<SHA256>.authenticationCode(
            for: Data("cairn status page".utf8), using: SymmetricKey(data: Data(token.utf8)))
        return code.map { String(format: "%02x", $0) }.joined()
    }

    static func cookie(_ name: String, in request: Request) -> Substring? {
        for header in request.headers[values: .cookie] {
            for pair in header.split(separator: ";") {
                let trimmed = pair.drop { $0 == " " }
                if trimmed.hasPrefix(name + "=") { return trimmed.dropFirst(name.count + 1) }
            }
        }
        return nil
    }

    /// Compares without returning early on the first difference, so timing says nothing about the token.
    static func equalInConstantTime(_ a: some Collection<UInt8>, _ b: some Collection<UInt8>) -> Bool {
        guard a.count == b.count else { return false }
        var difference: UInt8 = 0
        for (x, y) in zip(a, b) { difference |= x ^ y }
        return difference == 0
    }
}
