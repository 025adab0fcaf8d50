import CairnAPI
import Foundation
import Hummingbird
import NIOCore

/// Turns every error into the API's JSON error body, `{"error": {"code", "message"}}`, with an HTTP
/// status that fits the code. Unexpected errors become 500 with their description.
struct ErrorBodyMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws
        -> Response
    {
        do {
            return try await next(request, context)
        } catch let error as ManagementError {
            return Self.response(code: error.code, message: error.message)
        } catch let error as HTTPError where error.status == .notFound && error.body == nil {
            // The router found no route (a name is always percent-encoded into one path component, so
            // this is a client speaking another API version, not a missing volume).
            return Self.response(
                code: "not_found", message: "no such API call: \(request.method) \(request.uri.path)",
                status: .notFound)
        } catch let error as HTTPError {
            let code = error.status == .notFound ? "not_found" : "invalid_request"
            return Self.response(code: code, message: error.body ?? error.status.reasonPhrase, status: error.status)
        } catch let error as DecodingError {
            return Self.response(code: "invalid_request", message: "the request body is not valid JSON for this call: \(error)")
        } catch {
            return Self.response(code: "internal", message: "\(error)")
        }
    }

    /// HTTP status for each error code.
    static func status(for code: String) -> HTTPResponse.Status {
        switch code {
        case "not_found": .notFound
        case "already_exists", "would_lose_data", "busy", "read_only": .conflict
        case "invalid_argument", "invalid_request": .badRequest
        case "no_space": .init(code: 507, reasonPhrase: "Insufficient Storage")
        case "closed": .serviceUnavailable
        // Remote mirrors: a refusal the operator resolves (state, divergence, the target's tables) is a
        // conflict; an unreachable target is the gateway failing.
        case "diverged", "wrong_state", "not_configured": .conflict
        case "target_unreachable": .badGateway
        case "unauthorized": .unauthorized
        default: .internalServerError
        }
    }

    static func response(code: String, message: String, status: HTTPResponse.Status? = nil) -> Response {
        let body = (try? JSONEncoder().encode(APIErrorBody(code: code, message: message))) ?? Data()
        return Response(
            status: status ?? Self.status(for: code), headers: [.contentType: "application/json"],
            body: ResponseBody(byteBuffer: ByteBuffer(bytes: body + [0x0A])))
    }
}
