import Foundation
import Hummingbird
import Logging

/// Logs every API call once it is answered: method, path (no query: it may hold names only, but never
/// needs to be in a log), status and time, with the request id. Reads are debug (`cairn job show --wait`
/// and scrapers poll), changes are info, client errors notice, server errors error. Everything logged
/// while the call runs carries the same id (`RequestScope`). No bodies: they can hold data.
struct RequestLogMiddleware<Context: RequestContext>: RouterMiddleware {
    let logger: Logger

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws
        -> Response
    {
        let started = ContinuousClock.now
        let id = context.id
        do {
            let response = try await RequestScope.$requestID.withValue(id) { try await next(request, context) }
            log(request, id: id, status: response.status.code, since: started)
            return response
        } catch {
            let status = (error as? any HTTPResponseError)?.status.code ?? 500
            log(request, id: id, status: status, since: started)
            throw error
        }
    }

    func log(_ request: Request, id: String, status: Int, since started: ContinuousClock.Instant) {
        let level: Logger.Level =
            switch status {
            case 500...: .error
            case 400...: .notice
            default: request.method == .get || request.method == .head ? .debug : .info
            }
        let elapsed = started.duration(to: .now)
        let milliseconds = Double(elapsed.components.seconds) * 1e3 + Double(elapsed.components.attoseconds) / 1e15
        logger.log(
            level: level, "api request",
            metadata: [
                "request": "\(id)", "http.method": "\(request.method)", "http.path": "\(request.uri.path)",
                "http.status": "\(status)", "http.ms": "\(String(format: "%.1f", milliseconds))",
            ])
    }
}
