import Logging
import NBDServer
import NIOCore
import NIOPosix

/// Starts a real `NBDServer` on a free loopback port for the duration of `body`.
func withServer<Result>(
    _ exports: [MemoryExport],
    configuration: NBDServerConfiguration = NBDServerConfiguration(port: 0),
    logs: LogCapture? = nil,
    _ body: (NBDServer, MemoryCatalog) async throws -> Result
) async throws -> Result {
    let catalog = MemoryCatalog(exports)
    var logger = logs?.logger() ?? Logger(label: "nbd-test")
    if logs == nil { logger.logLevel = .critical }
    var configuration = configuration
    configuration.port = 0
    let server = try await NBDServer.start(catalog: catalog, configuration: configuration, logger: logger)
    do {
        let result = try await body(server, catalog)
        await server.close()
        return result
    } catch {
        await server.close()
        throw error
    }
}

extension NBDServer {
    /// `nbd://127.0.0.1:PORT/NAME`.
    func uri(_ export: String) -> String { "nbd://127.0.0.1:\(port)/\(export)" }
}
