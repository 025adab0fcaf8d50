import Logging
import NBDProtocol
import NIOCore
import NIOPosix
import Synchronization

/// An NBD server: accepts connections and serves the exports of a catalog over fixed newstyle NBD.
///
/// ```swift
/// let server = try await NBDServer.start(catalog: catalog, configuration: .init(port: 0))
/// print(server.port)
/// await server.shutdown()   // graceful: clients finish what they sent, then are disconnected
/// ```
public final class NBDServer: Sendable {
    /// The catalog exports are looked up and attached through.
    public let catalog: any NBDExportCatalog
    public let configuration: NBDServerConfiguration
    let group: any EventLoopGroup
    let logger: Logger
    let serverChannel: any Channel
    let connections: NBDConnectionRegistry

    private init(
        catalog: any NBDExportCatalog,
        configuration: NBDServerConfiguration,
        group: any EventLoopGroup,
        logger: Logger,
        serverChannel: any Channel,
        connections: NBDConnectionRegistry
    ) {
        self.catalog = catalog
        self.configuration = configuration
        self.group = group
        self.logger = logger
        self.serverChannel = serverChannel
        self.connections = connections
    }

    /// Binds the listening socket and starts accepting connections.
    ///
    /// - Parameters:
    ///   - group: event loops for the listener and the connections.
    ///   - logger: connection events are logged with `nbd.connection` and `nbd.remote` metadata.
    public static func start(
        catalog: any NBDExportCatalog,
        configuration: NBDServerConfiguration = .init(),
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        logger: Logger = Logger(label: "cairn.nbd")
    ) async throws -> NBDServer {
        guard configuration.handshake.tlsMode == .disabled || configuration.tls != nil else {
            throw NBDServerConfigurationError(description: "a TLS mode needs a certificate and a private key")
        }
        let connections = NBDConnectionRegistry(maximumConnections: configuration.maximumConnections)
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            // proto.md: both sides "SHOULD disable Nagle's algorithm".
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            // The connection handler decides when to read: that is its back-pressure.
            .childChannelOption(.autoRead, value: false)
            .childChannelOption(.recvAllocator, value: NBDConnectionHandler.receiveAllocator)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try Self.initializeConnection(
                        channel,
                        catalog: catalog,
                        configuration: configuration,
                        connections: connections,
                        logger: logger
                    )
                }
            }
            .bind(host: configuration.host, port: configuration.port)
            .get()
        logger.info("NBD server listening", metadata: ["nbd.address": "\(channel.localAddress.map { "\($0)" } ?? "?")"])
        return NBDServer(
            catalog: catalog,
            configuration: configuration,
            group: group,
            logger: logger,
            serverChannel: channel,
            connections: connections
        )
    }

    private static func initializeConnection(
        _ channel: any Channel,
        catalog: any NBDExportCatalog,
        configuration: NBDServerConfiguration,
        connections: NBDConnectionRegistry,
        logger: Logger
    ) throws {
        let remote = channel.remoteAddress.map(Self.describe) ?? "unknown"
        guard let id = connections.register(channel) else {
            logger.warning(
                "refusing connection: too many connections",
                metadata: ["nbd.remote": "\(remote)", "nbd.limit": "\(configuration.maximumConnections)"]
            )
            throw NBDServerConfigurationError(description: "connection limit reached")
        }
        channel.closeFuture.whenComplete { _ in connections.remove(id) }
        var connectionLogger = logger
        connectionLogger[metadataKey: "nbd.connection"] = "\(id)"
        connectionLogger[metadataKey: "nbd.remote"] = "\(remote)"
        let handler = NBDConnectionHandler(
            session: NBDSessionInfo(id: id, remoteAddress: remote, remoteIP: channel.remoteAddress?.ipAddress),
            catalog: catalog,
            configuration: configuration,
            logger: connectionLogger
        )
        try channel.pipeline.syncOperations.addHandler(handler)
    }

    /// "127.0.0.1:53412" or "[::1]:53412".
    static func describe(_ address: SocketAddress) -> String {
        guard let ip = address.ipAddress, let port = address.port else { return "\(address)" }
        if case .v6 = address { return "[\(ip)]:\(port)" }
        return "\(ip):\(port)"
    }

    /// The bound address.
    public var localAddress: SocketAddress? { serverChannel.localAddress }

    /// The bound TCP port (useful when the configuration asked for port 0).
    public var port: Int { serverChannel.localAddress?.port ?? configuration.port }

    /// Connections currently open.
    public var connectionCount: Int { connections.count }

    /// Graceful shutdown: stop accepting; clients still negotiating get NBD_REP_ERR_SHUTDOWN for further
    /// options; clients in transmission have requests already received completed, later ones failed with
    /// ESHUTDOWN, and are then disconnected. Whatever is still open after `gracePeriod` (default: the
    /// configuration's) is closed hard.
    public func shutdown(gracePeriod: TimeAmount? = nil) async {
        let grace = gracePeriod ?? configuration.shutdownGracePeriod
        logger.info("NBD server shutting down", metadata: ["nbd.connections": "\(connections.count)"])
        let channels = connections.stopAccepting()
        try? await serverChannel.close()
        for channel in channels {
            channel.pipeline.fireUserInboundEventTriggered(NBDConnectionHandler.ShutdownEvent())
        }
        let allClosed = EventLoopFuture.andAllComplete(channels.map(\.closeFuture), on: group.any())
        await withTaskGroup(of: Bool.self) { tasks in
            tasks.addTask {
                try? await allClosed.get()
                return true
            }
            tasks.addTask {
                try? await Task.sleep(nanoseconds: UInt64(max(grace.nanoseconds, 0)))
                return false
            }
            if await tasks.next() == false {
                self.logger.warning("closing connections that outlived the shutdown grace period")
                for channel in channels { channel.close(promise: nil) }
            }
            tasks.cancelAll()
        }
    }

    /// Hard close: the listener and every connection close now; running export calls still complete, and
    /// every attached session is detached once they have.
    public func close() async {
        let channels = connections.stopAccepting()
        try? await serverChannel.close()
        for channel in channels { channel.close(promise: nil) }
        try? await EventLoopFuture.andAllComplete(channels.map(\.closeFuture), on: group.any()).get()
    }
}

/// The open connections of one server, shared between its event loops.
final class NBDConnectionRegistry: Sendable {
    private struct State {
        var nextID: UInt64 = 1
        var accepting = true
        var channels: [UInt64: any Channel] = [:]
    }

    private let state = Mutex(State())
    let maximumConnections: Int

    init(maximumConnections: Int) {
        self.maximumConnections = maximumConnections
    }

    /// A new connection id, or nil when the server is full or no longer accepting.
    func register(_ channel: any Channel) -> UInt64? {
        state.withLock { state in
            guard state.accepting, state.channels.count < maximumConnections else { return nil }
            let id = state.nextID
            state.nextID += 1
            state.channels[id] = channel
            return id
        }
    }

    func remove(_ id: UInt64) {
        _ = state.withLock { $0.channels.removeValue(forKey: id) }
    }

    /// Refuses new connections and returns the open ones.
    func stopAccepting() -> [any Channel] {
        state.withLock { state in
            state.accepting = false
            return Array(state.channels.values)
        }
    }

    var count: Int { state.withLock { $0.channels.count } }
}
