import ArgumentParser
import CairnControl
import CairnDaemon
import Logging

/// `cairn serve`: run the daemon in the foreground.
struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Run the daemon: serve the pool's volumes over NBD and the management API.")

    @Option(name: .long, help: "Pool directory (default: $CAIRN_DATA or ./.cairn); created when missing.")
    var dataDir: String?

    @Option(name: .long, help: "Address the NBD listener binds to.")
    var nbdHost = "127.0.0.1"

    @Option(name: .long, help: "NBD port (0 picks a free one; the daemon writes it to daemon.json).")
    var nbdPort = 10809

    @Option(name: .long, help: "Management API socket (default: <data-dir>/cairn.sock).")
    var apiSocket: String?

    @Option(name: .long, help: "Serve the management API on 127.0.0.1:PORT instead of a unix socket.")
    var apiPort: Int?

    @Option(name: .long, help: "Threads doing blocking file I/O.")
    var ioThreads = DaemonConfiguration(dataDirectory: "").ioThreads

    @Option(name: .long, help: "Pause between two extents a clone job copies, in ms (a sync rate limit; default 0).")
    var cloneExtentDelayMs: UInt64 = 0

    @Option(name: .long, help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel = "info"

    func validate() throws {
        guard Logger.Level(rawValue: logLevel) != nil else {
            throw ValidationError("unknown log level '\(logLevel)'")
        }
        guard (0...65535).contains(nbdPort) else { throw ValidationError("--nbd-port must be 0...65535") }
        if let apiPort, !(1...65535).contains(apiPort) { throw ValidationError("--api-port must be 1...65535") }
        guard (1...256).contains(ioThreads) else { throw ValidationError("--io-threads must be 1...256") }
        if let apiSocket, apiSocket.utf8.count >= 108 {
            throw ValidationError("--api-socket path is too long for a unix socket (108 bytes)")
        }
    }

    func run() async throws {
        let level = Logger.Level(rawValue: logLevel)!
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "cairn")
        var configuration = DaemonConfiguration(dataDirectory: resolveDataDirectory(dataDir))
        configuration.nbdHost = nbdHost
        configuration.nbdPort = nbdPort
        configuration.ioThreads = ioThreads
        configuration.cloneExtentDelayMilliseconds = cloneExtentDelayMs
        if let apiPort {
            configuration.apiEndpoint = .loopback(port: apiPort)
        } else if let apiSocket {
            configuration.apiEndpoint = .unixSocket(path: apiSocket)
        }
        if case .unixSocket(let path) = configuration.resolvedAPIEndpoint, path.utf8.count >= 108 {
            printError("the API socket path \(path) is too long for a unix socket; use a shorter --data-dir or --api-socket")
            throw ArgumentParser.ExitCode(ExitStatus.usage)
        }
        do {
            try await Daemon.run(configuration, logger: logger)
        } catch {
            printError("\(error)")
            throw ArgumentParser.ExitCode(ExitStatus.failure)
        }
    }
}
