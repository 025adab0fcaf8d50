import NBDProtocol
import NIOCore

/// How an `NBDServer` listens and what it allows each client.
public struct NBDServerConfiguration: Sendable {
    /// Address to listen on. Loopback by default: exposing block devices is a decision, not a default.
    public var host: String
    /// TCP port; 10809 is NBD's IANA port (proto.md "Newstyle negotiation"); 0 picks a free port.
    public var port: Int
    /// Connections served at once; further ones are closed on accept.
    public var maximumConnections: Int
    /// Per-connection flow control (requests and bytes in flight).
    public var flowControl: NBDTransmissionStateMachine.Limits
    /// Handshake behaviour (TLS mode, extended headers, option count).
    ///
    /// TLS modes other than `.disabled` need `tls` (the certificate and key); `start` refuses them without.
    public var handshake: NBDHandshakeConfiguration
    /// What NBD_OPT_STARTTLS upgrades to.
    public var tls: NBDServerTLS?
    /// A client that has not entered transmission after this long is disconnected. qemu-nbd's
    /// `--handshake-limit` defaults to 10 seconds.
    public var handshakeTimeout: TimeAmount
    /// How long a graceful shutdown waits for connections to finish before closing them.
    public var shutdownGracePeriod: TimeAmount
    /// Transmission-phase idle and payload-progress timeouts (`NBDLivenessStateMachine`).
    public var transmissionTimeouts: NBDLivenessStateMachine.Timeouts

    /// Default connection cap: far above the handful of connections a host opens per export (nbdcopy and
    /// fio open two, qemu multi-conn up to 16) while bounding the memory all clients can pin together.
    public static let defaultMaximumConnections = 128

    public init(
        host: String = "127.0.0.1",
        port: Int = 10809,
        maximumConnections: Int = NBDServerConfiguration.defaultMaximumConnections,
        flowControl: NBDTransmissionStateMachine.Limits = .init(),
        handshake: NBDHandshakeConfiguration = .init(),
        handshakeTimeout: TimeAmount = .seconds(10),
        shutdownGracePeriod: TimeAmount = .seconds(10),
        tls: NBDServerTLS? = nil,
        transmissionTimeouts: NBDLivenessStateMachine.Timeouts = .init()
    ) {
        self.transmissionTimeouts = transmissionTimeouts
        self.tls = tls
        self.host = host
        self.port = port
        self.maximumConnections = maximumConnections
        self.flowControl = flowControl
        self.handshake = handshake
        self.handshakeTimeout = handshakeTimeout
        self.shutdownGracePeriod = shutdownGracePeriod
    }
}

/// Why `NBDServer.start` refused a configuration.
public struct NBDServerConfigurationError: Error, Sendable, Hashable, CustomStringConvertible {
    public var description: String
}
