import CairnAPI
import Foundation
import Hummingbird
import NIOCore

extension ControlServer {
    /// GET /status: the HTML status page; GET /: a redirect to it, for a person typing the address.
    static func addStatusRoutes(
        to router: Router<BasicRequestContext>, service: any ManagementService, recentErrors: RecentErrors?,
        backups: (any BackupService)? = nil
    ) {
        router.get(RouterPath(APIPath.statusPage)) { _, _ in
            var report = try await StatusReport.gather(service: service, recentErrors: recentErrors)
            report.backups = try await backups?.listBackups() ?? []
            return Response(
                status: .ok,
                headers: [
                    .contentType: "text/html; charset=utf-8", .cacheControl: "no-store",
                    // Read-only and script-free: forbid scripts, frames and form posts outright.
                    .contentSecurityPolicy: "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
                ],
                body: ResponseBody(byteBuffer: ByteBuffer(string: StatusPage.render(report))))
        }
        router.get("/") { _, _ in
            Response(status: .seeOther, headers: [.location: APIPath.statusPage])
        }
    }
}
