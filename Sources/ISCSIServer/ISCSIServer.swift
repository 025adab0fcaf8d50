import ISCSIProtocol
import Logging
import NIOCore
import NIOPosix
import Synchronization

/// Settings of an iSCSI listener.
public struct ISCSIServerConfiguration: Sendable {
    public var host: String
    /// 3260 is iSCSI's IANA port (RFC 7143 §13.x "iscsi-target"); 0 picks a free one.
    public var port: Int
    /// A login that has not reached full feature phase by then is closed: a client that connects and
    /// never finishes logging in does not hold a connection slot.
    public var loginTimeout: TimeAmount = .seconds(30)
    /// Connections at once; more are refused at accept.
    public var maximumConnections = 256
    /// CHAP secrets and whether logins must use them.
    public var chap = ISCSIChapConfiguration.disabled

    public init(host: String = "127.0.0.1", port: Int = 3260) {
        self.host = host
        self.port = port
    }
}

/// An iSCSI target server: accepts connections and serves the catalog's targets.
public final class ISCSIServer: Sendable {
    public let configuration: ISCSIServerConfiguration
    let serverChannel: any Channel
    let connections: ISCSIConnectionRegistry
    let group: any EventLoopGroup
    let logger: Logger

    private init(
        configuration: ISCSIServerConfiguration, serverChannel: any Channel, connections: ISCSIConnectionRegistry,
        group: any EventLoopGroup, logger: Logger
    ) {
        self.configuration = configuration
        self.serverChannel = serverChannel
        self.connections = connections
        self.group = group
        self.logger = logger
    }

    /// Binds the listening socket and starts accepting logins. `reservations`: the units' reservations,
    /// with the store and saved state that make APTPL work (without a store APTPL is refused).
    public static func start(
        catalog: any ISCSITargetCatalog, configuration: ISCSIServerConfiguration,
        reservations: ISCSIReservationTable = ISCSIReservationTable(),
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton, logger: Logger = Logger(label: "cairn.iscsi")
    ) async throws -> ISCSIServer {
        let connections = ISCSIConnectionRegistry(maximumConnections: configuration.maximumConnections)
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let remote = channel.remoteAddress.map(describe) ?? "unknown"
                    guard let id = connections.register(channel) else {
                        logger.warning("refusing iSCSI connection: too many connections", metadata: ["iscsi.remote": "\(remote)"])
                        throw ISCSIServerError(description: "connection limit reached")
                    }
                    channel.closeFuture.whenComplete { _ in connections.remove(id) }
                    var connectionLogger = logger
                    connectionLogger[metadataKey: "iscsi.connection"] = "\(id)"
                    connectionLogger[metadataKey: "iscsi.remote"] = "\(remote)"
                    let initiator = ISCSIInitiatorInfo(
                        id: id, remoteAddress: remote, remoteIP: channel.remoteAddress?.ipAddress)
                    let portal = channel.localAddress.map(describe) ?? "\(configuration.host):\(configuration.port)"
                    try channel.pipeline.syncOperations.addHandler(
                        ISCSIConnectionHandler(
                            initiator: initiator, portal: portal, catalog: catalog, configuration: configuration,
                            tsih: UInt16(truncatingIfNeeded: id % 0xFFFF) + 1, logger: connectionLogger,
                            registry: connections, reservations: reservations))
                }
            }
            .bind(host: configuration.host, port: configuration.port)
            .get()
        logger.info("iSCSI target listening", metadata: ["iscsi.address": "\(channel.localAddress.map { "\($0)" } ?? "?")"])
        return ISCSIServer(
            configuration: configuration, serverChannel: channel, connections: connections, group: group, logger: logger)
    }

    /// "127.0.0.1:3260" or "[::1]:3260".
    static func describe(_ address: SocketAddress) -> String {
        guard let ip = address.ipAddress, let port = address.port else { return "\(address)" }
        if case .v6 = address { return "[\(ip)]:\(port)" }
        return "\(ip):\(port)"
    }

    /// The bound TCP port.
    public var port: Int { serverChannel.localAddress?.port ?? configuration.port }

    /// Sessions (connections) open now.
    public var connectionCount: Int { connections.count }

    /// The sessions that completed their login, oldest first.
    public var sessions: [ISCSISessionSummary] { connections.sessions }

    /// Stops accepting and closes every connection; commands already running complete against the
    /// storage and every attached session is detached once they have.
    public func close() async {
        let channels = connections.stopAccepting()
        try? await serverChannel.close()
        for channel in channels { channel.close(promise: nil) }
        try? await EventLoopFuture.andAllComplete(channels.map(\.closeFuture), on: group.any()).get()
    }
}

/// A logged-in session as the status page lists it.
public struct ISCSISessionSummary: Sendable, Hashable {
    public var id: UInt64
    public var remoteAddress: String
    public var initiatorName: String
    /// The CHAP name the initiator authenticated as; nil without CHAP.
    public var chapName: String?
    /// The target of a normal session; nil for discovery.
    public var target: String?
}

/// A refusal while setting up a connection.
public struct ISCSIServerError: Error, Sendable, CustomStringConvertible {
    public var description: String
}

/// The open connections of one server, shared between its event loops.
final class ISCSIConnectionRegistry: Sendable {
    private struct State {
        var nextID: UInt64 = 1
        var accepting = true
        var channels: [UInt64: any Channel] = [:]
        var sessions: [UInt64: ISCSISessionSummary] = [:]
    }

    private let state = Mutex(State())
    let maximumConnections: Int

    init(maximumConnections: Int) { self.maximumConnections = maximumConnections }

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
        state.withLock { state in
            state.channels.removeValue(forKey: id)
            state.sessions.removeValue(forKey: id)
        }
    }

    /// A connection completed its login.
    func loggedIn(_ session: ISCSISessionSummary) { state.withLock { $0.sessions[session.id] = session } }

    var sessions: [ISCSISessionSummary] { state.withLock { $0.sessions.values.sorted { $0.id < $1.id } } }

    func stopAccepting() -> [any Channel] {
        state.withLock { state in
            state.accepting = false
            return Array(state.channels.values)
        }
    }

    var count: Int { state.withLock { $0.channels.count } }
}
