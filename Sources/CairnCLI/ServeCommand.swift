import ArgumentParser
import CairnControl
import CairnDaemon
import CairnIO
import Foundation
import Logging
import NBDProtocol

/// `cairn serve`: run the daemon in the foreground.
struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Run the daemon: serve the pool's volumes over NBD and the management API.")

    @Option(name: .long, help: "Configuration file (YAML, see docs/OPERATIONS.md; default: $CAIRN_CONFIG). Flags override it.")
    var config: String?

    @Flag(name: .long, help: "Validate the configuration (file and flags), print it, and exit without serving.")
    var checkConfig = false

    @Option(name: .long, help: "Pool directory (default: $CAIRN_DATA or ./.cairn); created when missing.")
    var dataDir: String?

    @Option(name: .long, help: "Address the NBD listener binds to (default: 127.0.0.1).")
    var nbdHost: String?

    @Option(name: .long, help: "NBD port (default 10809; 0 picks a free one, written to daemon.json).")
    var nbdPort: Int?

    @Option(name: .long, help: "Close an NBD connection that sends nothing for this many seconds while no request of its runs (default 0: never).")
    var nbdIdleTimeout: Double?

    @Option(name: .long, help: "Close an NBD connection that stops for this many seconds inside a request (default 60; 0: never).")
    var nbdProgressTimeout: Double?

    /// A day: a handshake needs milliseconds; anything longer is a typo, not a slow client.
    static let longestHandshakeTimeout: Double = 86_400

    @Option(name: .long, help: "Close an NBD connection whose option negotiation takes longer than this many seconds (default 10).")
    var nbdHandshakeTimeout: Double?

    @Option(
        name: .long,
        help: "iSCSI listener HOST:PORT or PORT (default: the NBD host, port 3260; a free port when --nbd-port is 0).")
    var iscsiListen: String?

    @Flag(name: .long, help: "Do not serve volumes over iSCSI.")
    var noIscsi = false

    @Option(name: .long, help: "Management API socket (default: <data-dir>/cairn.sock).")
    var apiSocket: String?

    @Option(name: .long, help: "Serve the management API on 127.0.0.1:PORT instead of a unix socket.")
    var apiPort: Int?

    @Option(
        name: .long,
        help: "With --api-port: file holding the API token clients must present (default: <data-dir>/api.token, made if missing).")
    var apiTokenFile: String?

    @Option(name: .long, help: "Pause between two extents a clone job copies, in ms (a sync rate limit; default 0).")
    var cloneExtentDelayMs: UInt64 = 0

    @Option(name: .long, help: "Pause per MiB a backup archive reads, in ms (an archive rate limit; default 0).")
    var backupArchiveDelayMs: UInt64 = 0

    @Option(name: .long, help: "How slot files are written: buffered (default), direct (O_DIRECT) or write-through.")
    var dataWrites: String = StorageWriteMode.buffered.rawValue

    @Flag(
        inversion: .prefixedNo,
        help: "Keep a CRC-32C per 4 KiB of data and verify every read (default on; off only to measure its cost).")
    var dataChecksums = true

    @OptionGroup var tls: NBDTLSFlags

    @OptionGroup var rados: RadosFlags

    @Option(
        name: .customLong("tls-export"),
        help: "With --tls selective: a volume (name or prefix*) reachable only over TLS; repeatable.")
    var tlsExports: [String] = []

    @Option(name: .long, help: "Threads doing blocking file I/O (default: 4).")
    var ioThreads: Int?

    @Flag(
        name: .long,
        help: "Shut down (gracefully) when the process that started the daemon exits, as nbdkit's flag of that name.")
    var exitWithParent = false

    @Option(name: .long, help: "Log level: trace, debug, info, notice, warning, error, critical (default: info).")
    var logLevel: String?

    @Option(name: .long, help: "Listen for mirror primaries on this port (this daemon becomes a mirror target; default: off).")
    var replicationPort: Int?

    @Option(name: .long, help: "Address the replication listener binds to (default: the NBD host).")
    var replicationHost: String?

    @Option(name: .long, help: "File holding the secret mirror primaries and targets share (at least 16 bytes).")
    var replicationSecretFile: String?

    @Option(name: .long, help: "Milliseconds a mirror frame may go unanswered before it is sent again (default 5000).")
    var mirrorTimeoutMs: UInt64?

    @Option(name: .long, help: "Retransmissions before a mirror fractures (default 3).")
    var mirrorRetries: Int?

    @Option(name: .long, help: "Shell command run when a mirror fractures (CAIRN_MIRROR_VOLUME, _TARGET, _ERROR set).")
    var mirrorAlertCommand: String?

    @Option(name: .long, help: "Pause after each extent a mirror resync copies, in ms (a resync rate limit; default 0).")
    var mirrorResyncDelayMs: UInt64?

    @Option(name: .long, help: "TLS on the replication link: this node's PEM certificate (for both roles).")
    var replicationTlsCert: String?

    @Option(name: .long, help: "TLS on the replication link: this node's PEM private key.")
    var replicationTlsKey: String?

    @Option(name: .long, help: "TLS on the replication link: the PEM CA the peer's certificate must chain to.")
    var replicationTlsCa: String?

    /// The settings after the file and the flags, checked.
    struct Settings {
        var daemon: DaemonConfiguration
        var logLevel: Logger.Level
    }

    /// A timeout in seconds from a flag or the file: 0 turns it off; negative or absurd values are refused.
    static func timeout(_ seconds: Double?, default fallback: Duration?, name: String) throws -> Duration? {
        guard let seconds else { return fallback }
        guard seconds.isFinite, (0...86400).contains(seconds) else {
            throw ConfigError("the \(name) must be 0...86400 seconds (0: off)")
        }
        return seconds == 0 ? nil : .milliseconds(Int64(seconds * 1000))
    }

    /// A timeout for `--check-config`: its duration, or "off".
    static func describe(_ timeout: Duration?) -> String { timeout.map { "\($0)" } ?? "off" }

    /// File first, then flags over it; every value checked whichever place it came from.
    func resolvedSettings() throws -> Settings {
        let file = try (config ?? ProcessInfo.processInfo.environment["CAIRN_CONFIG"]).map(ServeConfigFile.load)
        var daemon = DaemonConfiguration(dataDirectory: resolveDataDirectory(dataDir ?? file?.dataDir))
        daemon.nbdHost = nbdHost ?? file?.nbd?.host ?? daemon.nbdHost
        daemon.nbdPort = nbdPort ?? file?.nbd?.port ?? daemon.nbdPort
        daemon.ioThreads = ioThreads ?? file?.io?.threads ?? daemon.ioThreads
        try applyISCSI(file: file?.iscsi, to: &daemon)
        daemon.apiTokenFile = apiTokenFile ?? file?.api?.tokenFile
        daemon.cloneExtentDelayMilliseconds = cloneExtentDelayMs
        daemon.backupArchiveDelayMilliseconds = backupArchiveDelayMs
        guard let writes = StorageWriteMode(rawValue: dataWrites), writes != .directRefused else {
            throw ValidationError("--data-writes: '\(dataWrites)' is not buffered, direct or write-through")
        }
        daemon.dataWrites = writes
        daemon.dataChecksums = dataChecksums
        daemon.parentToFollow = exitWithParent ? getppid() : nil
        let levelName = logLevel ?? file?.log?.level ?? "info"
        guard let level = Logger.Level(rawValue: levelName) else {
            throw ConfigError("unknown log level '\(levelName)' (trace, debug, info, notice, warning, error, critical)")
        }
        guard (0...65535).contains(daemon.nbdPort) else { throw ConfigError("the NBD port must be 0...65535") }
        guard !daemon.nbdHost.isEmpty else { throw ConfigError("the NBD host cannot be empty") }
        guard (1...256).contains(daemon.ioThreads) else { throw ConfigError("I/O threads must be 1...256") }
        daemon.nbdTimeouts.idle = try Self.timeout(
            nbdIdleTimeout ?? file?.nbd?.idleTimeout, default: daemon.nbdTimeouts.idle, name: "NBD idle timeout")
        daemon.nbdTimeouts.payloadProgress = try Self.timeout(
            nbdProgressTimeout ?? file?.nbd?.progressTimeout, default: daemon.nbdTimeouts.payloadProgress,
            name: "NBD progress timeout")
        if let nbdHandshakeTimeout {
            guard nbdHandshakeTimeout > 0, nbdHandshakeTimeout <= Self.longestHandshakeTimeout else {
                throw ConfigError("the NBD handshake timeout must be above 0 and at most \(Int(Self.longestHandshakeTimeout)) seconds")
            }
            daemon.nbdHandshakeTimeout = nbdHandshakeTimeout
        }
        daemon.tlsCertificate = tls.tlsCert ?? file?.tls?.cert
        daemon.tlsKey = tls.tlsKey ?? file?.tls?.key
        daemon.tlsClientCA = tls.tlsCa ?? file?.tls?.ca
        daemon.tlsPreSharedKeys = tls.tlsPskFile ?? file?.tls?.pskFile
        if daemon.tlsPreSharedKeys != nil, daemon.tlsCertificate != nil || daemon.tlsClientCA != nil {
            throw ConfigError("choose certificates (--tls-cert, --tls-ca) or pre-shared keys (--tls-psk-file), not both")
        }
        let credentials = daemon.tlsCertificate != nil || daemon.tlsPreSharedKeys != nil
        let mode = tls.tls ?? file?.tls?.mode ?? (credentials ? "required" : "off")
        guard let parsed = NBDTLSFlags.mode(named: mode) else {
            throw ConfigError("unknown TLS mode '\(mode)' (off, selective, required)")
        }
        daemon.tlsMode = parsed
        if daemon.tlsMode != .disabled, daemon.tlsPreSharedKeys == nil,
            daemon.tlsCertificate == nil || daemon.tlsKey == nil
        {
            throw ConfigError(
                "TLS mode \(mode) needs a certificate and a private key (--tls-cert, --tls-key) or pre-shared keys "
                    + "(--tls-psk-file)")
        }
        daemon.tlsOnlyExports = tlsExports.isEmpty ? (file?.tls?.exports ?? []) : tlsExports
        if !daemon.tlsOnlyExports.isEmpty {
            guard daemon.tlsMode == .selective else {
                throw ConfigError(
                    "TLS-only exports (--tls-export, tls.exports) need TLS mode selective; under required every "
                        + "export needs TLS, under off none can have it")
            }
            guard daemon.tlsOnlyExports.allSatisfy({ !$0.isEmpty }) else {
                throw ConfigError("a TLS-only export pattern cannot be empty")
            }
        }
        switch file?.tls?.clientCertificates ?? "required" {
        case "required": daemon.tlsRequireClientCertificate = true
        case "optional": daemon.tlsRequireClientCertificate = false
        case let other: throw ConfigError("tls.client_certificates is required or optional, not '\(other)'")
        }
        if let rules = file?.access {
            daemon.access = ExportAccessPolicy(rules: try rules.enumerated().map { index, rule in
                try Self.accessRule(rule, at: index)
            })
        }
        for path in [daemon.tlsCertificate, daemon.tlsKey, daemon.tlsClientCA, daemon.tlsPreSharedKeys].compactMap({ $0 })
        where !FileManager.default.isReadableFile(atPath: path) {
            throw ConfigError("cannot read \(path)")
        }
        // A flag for one kind of API endpoint replaces the file's, whichever kind the file chose.
        let fromFlags = apiPort != nil || apiSocket != nil
        let port = fromFlags ? apiPort : file?.api?.port
        let socket = fromFlags ? apiSocket : file?.api?.socket
        if port != nil && socket != nil { throw ConfigError("choose an API socket or an API port, not both") }
        if let port {
            guard (1...65535).contains(port) else { throw ConfigError("the API port must be 1...65535") }
            daemon.apiEndpoint = .loopback(port: port)
        } else if let socket {
            daemon.apiEndpoint = .unixSocket(path: socket)
        }
        if case .unixSocket(let path) = daemon.resolvedAPIEndpoint, path.utf8.count >= 108 {
            throw ConfigError(
                "the API socket path \(path) is too long for a unix socket (108 bytes); use a shorter data directory or API socket")
        }
        try applyReplicationFlags(file: file?.replication, to: &daemon)
        try applyRadosFlags(file: file?.rados, to: &daemon)
        return Settings(daemon: daemon, logLevel: level)
    }

    static func accessRule(_ rule: ServeConfigFile.AccessRule, at index: Int) throws -> ExportAccessPolicy.Rule {
        let place = "access[\(index)]"
        guard !rule.exports.isEmpty, rule.exports.allSatisfy({ !$0.isEmpty }) else {
            throw ConfigError("\(place).exports must name at least one volume or pattern")
        }
        let addresses = try rule.addresses.map { texts in
            try texts.map { text in
                guard let range = AddressRange(text) else {
                    throw ConfigError("\(place).addresses: '\(text)' is not an IP address or CIDR range")
                }
                return range
            }
        }
        let readOnly: Bool
        switch rule.mode ?? "read-write" {
        case "read-write": readOnly = false
        case "read-only": readOnly = true
        case let other: throw ConfigError("\(place).mode is read-write or read-only, not '\(other)'")
        }
        return ExportAccessPolicy.Rule(exports: rule.exports, clients: rule.clients, addresses: addresses, readOnly: readOnly)
    }

    static func describeTLS(_ daemon: DaemonConfiguration) -> String {
        switch daemon.tlsMode {
        case .disabled: return "off"
        case .selective, .required:
            let mode = daemon.tlsMode == .required ? "required" : "selective"
            let clients = daemon.tlsClientCA.map { ", client certificates from \($0)" } ?? ""
            if let keys = daemon.tlsPreSharedKeys { return "\(mode) (pre-shared keys from \(keys))" }
            let only = daemon.tlsOnlyExports.isEmpty ? "" : "; TLS only: " + daemon.tlsOnlyExports.joined(separator: ", ")
            return "\(mode) (\(daemon.tlsCertificate ?? "?"), \(daemon.tlsKey ?? "?")\(clients))\(only)"
        }
    }

    static func describe(_ settings: Settings) -> String {
        let api: String
        switch settings.daemon.resolvedAPIEndpoint {
        case .unixSocket(let path): api = "unix:\(path)"
        case .loopback(let port):
            api = "http://127.0.0.1:\(port) (token: \(settings.daemon.apiTokenFile ?? settings.daemon.dataDirectory + "/api.token"))"
        }
        return """
            data directory  \(settings.daemon.dataDirectory)
            nbd             \(settings.daemon.nbdHost):\(settings.daemon.nbdPort)
            nbd timeouts    idle \(Self.describe(settings.daemon.nbdTimeouts.idle)), \
            progress \(Self.describe(settings.daemon.nbdTimeouts.payloadProgress))
            iscsi           \(settings.daemon.resolvedISCSIPort.map { "\(settings.daemon.iscsiHost ?? settings.daemon.nbdHost):\($0)" } ?? "off")
            api             \(api)
            tls             \(Self.describeTLS(settings.daemon))
            access          \(settings.daemon.access.map { "\($0.rules.count) rule(s)" } ?? "everyone, read-write")
            replication     \(Self.describeReplication(settings.daemon))
            rados           \(Self.describeRados(settings.daemon))
            io threads      \(settings.daemon.ioThreads)
            log level       \(settings.logLevel)
            """
    }

    /// Largest I/O buffer kept in the heap for reuse (see `HeapTuning`): twice the largest NBD payload.
    static let retainedHeapBlock = 64 << 20

    func run() async throws {
        let settings: Settings
        do {
            settings = try resolvedSettings()
        } catch {
            printError("\(error)")
            throw ArgumentParser.ExitCode(ExitStatus.usage)
        }
        if checkConfig {
            print(Self.describe(settings))
            print("configuration OK")
            return
        }
        HeapTuning.retainHeapBlocks(upTo: Self.retainedHeapBlock)
        let recentErrors = RecentErrors()
        LoggingSystem.bootstrap(
            { label, provider in
                var stream = StreamLogHandler.standardError(label: label, metadataProvider: provider)
                stream.logLevel = settings.logLevel
                return MultiplexLogHandler([stream, RecentErrorsLogHandler(recent: recentErrors, metadataProvider: provider)])
            }, metadataProvider: RequestScope.metadataProvider)
        var daemon = settings.daemon
        daemon.recentErrors = recentErrors
        let logger = Logger(label: "cairn")
        do {
            try await Daemon.run(daemon, logger: logger)
        } catch let error as ClusterUnreachableError {
            printError("\(error)")
            throw ArgumentParser.ExitCode(ExitStatus.clusterUnreachable)
        } catch let error as PoolFencedError {
            printError("\(error)")
            throw ArgumentParser.ExitCode(ExitStatus.fenced)
        } catch {
            printError("\(error)")
            throw ArgumentParser.ExitCode(ExitStatus.failure)
        }
    }
}
