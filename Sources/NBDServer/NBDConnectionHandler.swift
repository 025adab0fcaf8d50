import Logging
import NBDProtocol
import NIOCore
import NIOSSL
import NIOTLS

/// One client connection: owns the frame parser and the protocol state machines, and is the single place
/// their actions are executed. All state is confined to the channel's event loop.
///
/// Reading is explicit (`autoRead` is off): the handler asks for more bytes only while the transmission
/// state machine admits more requests, which bounds both the requests and the bytes a client can pin.
final class NBDConnectionHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// Sent through the pipeline by `NBDServer.shutdown`.
    struct ShutdownEvent: Sendable {}

    /// Receive buffers grow up to 1 MiB so a 32 MiB WRITE arrives in a few dozen reads, not hundreds.
    static let receiveAllocator = AdaptiveRecvByteBufferAllocator(
        minimum: 4096,
        initial: 64 * 1024,
        maximum: 1024 * 1024
    )

    enum Phase {
        case handshake(NBDHandshakeStateMachine)
        case transmission(NBDTransmissionStateMachine, any NBDExport)
        /// The connection is gone or going; completions still drain, nothing new starts.
        case closed
    }

    let sessionReference: NBDSessionReference
    /// Filled in by the TLS key callback when the session uses a pre-shared key.
    let pskIdentity = NBDPSKIdentity()
    var session: NBDSessionInfo { sessionReference.info }
    let catalog: any NBDExportCatalog
    let configuration: NBDServerConfiguration
    let logger: Logger
    var phase: Phase
    var parser = NBDFrameParser()
    var context: ChannelHandlerContext?
    /// A `read()` is outstanding: do not issue another until `channelReadComplete`.
    var readPending = false
    var handshakeTimer: Scheduled<Void>?
    /// Stall detection in the transmission phase, and its one timer with the deadline it is armed for.
    var liveness: NBDLivenessStateMachine?
    var livenessTimer: (timer: Scheduled<Void>, deadline: UInt64)?
    /// A flush of queued replies is scheduled on the event loop.
    var flushScheduled = false
    /// The export the catalog attached, until it is detached (exactly once).
    var attachedExport: (any NBDExport)?
    var requestsRunning = 0
    /// STARTTLS was answered: nothing is parsed until the TLS handshake completes.
    var awaitingTLS = false

    init(
        session: NBDSessionInfo,
        catalog: any NBDExportCatalog,
        configuration: NBDServerConfiguration,
        logger: Logger
    ) {
        self.sessionReference = NBDSessionReference(session)
        self.catalog = catalog
        self.configuration = configuration
        self.logger = logger
        let directory = NBDCatalogDirectory(
            catalog: catalog,
            sessionReference: sessionReference,
            maximumPayload: NBDLimits.maximumPayload
        )
        self.phase = .handshake(NBDHandshakeStateMachine(configuration: configuration.handshake, directory: directory))
    }

    /// Time a client still negotiating gets, after shutdown starts, to read its ERR_SHUTDOWN replies and
    /// leave on its own before the connection is closed.
    static let handshakeShutdownGrace: TimeAmount = .milliseconds(500)

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        logger.info("NBD client connected")
        handshakeTimer = context.eventLoop.assumeIsolated().scheduleTask(in: configuration.handshakeTimeout) {
            guard case .handshake = self.phase else { return }
            self.hardClose("handshake not finished within \(self.configuration.handshakeTimeout)")
        }
        guard case .handshake(var machine) = phase else { return }
        let action = machine.start()
        phase = .handshake(machine)
        run(action)
        readIfAllowed()
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        parser.append(unwrapInboundIn(data))
        processInput()
        livenessEvent(bytesReceived: true)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        readPending = false
        readIfAllowed()
    }

    func channelInactive(context: ChannelHandlerContext) {
        handshakeTimer?.cancel()
        livenessTimer?.timer.cancel()
        livenessTimer = nil
        if case .transmission(var machine, _) = phase {
            machine.connectionClosed()
        }
        phase = .closed
        logger.info("NBD client disconnected", metadata: ["nbd.running": "\(requestsRunning)"])
        detachIfIdle()
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case .handshakeCompleted = event as? TLSUserEvent { return tlsEstablished() }
        guard event is ShutdownEvent else { return context.fireUserInboundEventTriggered(event) }
        switch phase {
        case .handshake(var machine):
            machine.shutdownRequested()
            phase = .handshake(machine)
            // Options arriving now get ERR_SHUTDOWN; a client that sends none (idle in negotiation) must not
            // hold the server up for the whole handshake timeout.
            handshakeTimer?.cancel()
            handshakeTimer = context.eventLoop.assumeIsolated().scheduleTask(in: Self.handshakeShutdownGrace) {
                guard case .handshake = self.phase else { return }
                self.hardClose("server shutting down during negotiation")
            }
        case .transmission(var machine, let export):
            let closeNow = machine.shutdownRequested()
            phase = .transmission(machine, export)
            if closeNow { softClose("server shutdown") }
        case .closed:
            break
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        logger.debug("NBD connection error", metadata: ["error": "\(error)"])
        hardClose("connection error")
    }

    /// Turns buffered bytes into messages for as long as the current phase may take them.
    func processInput() {
        while mayParse {
            let message: NBDClientMessage?
            do {
                message = try parser.next()
            } catch {
                logger.warning("NBD protocol violation", metadata: ["error": "\(error.message)"])
                hardClose("protocol violation")
                return
            }
            guard let message else { break }
            handle(message)
        }
        readIfAllowed()
    }

    private var mayParse: Bool {
        switch phase {
        case .handshake: !awaitingTLS
        case .transmission(let machine, _): machine.canAcceptRequest
        case .closed: false
        }
    }

    func readIfAllowed() {
        guard !readPending, mayParse, let context, context.channel.isActive else { return }
        readPending = true
        context.read()
    }

    private func handle(_ message: NBDClientMessage) {
        switch (message, phase) {
        case (.clientFlags(let flags), .handshake(var machine)):
            let action = machine.clientFlagsReceived(flags)
            phase = .handshake(machine)
            run(action)
        case (.option(let option), .handshake(var machine)):
            logger.debug("NBD option", metadata: ["nbd.option": "\(option.code)"])
            let action = machine.optionReceived(option)
            phase = .handshake(machine)
            run(action)
        case (.request(let request), .transmission):
            handleRequest(request)
        default:
            hardClose("message out of phase")
        }
    }

    /// Closes after pending writes are flushed (ABORT, DISC, shutdown).
    func softClose(_ reason: String) {
        logger.debug("NBD closing connection", metadata: ["reason": "\(reason)"])
        enterClosed()
        guard let context else { return }
        context.writeAndFlush(wrapOutboundOut(ByteBuffer())).assumeIsolated().whenComplete { _ in
            context.close(promise: nil)
        }
    }

    /// Hard disconnect: close now, nothing more is sent.
    func hardClose(_ reason: String) {
        logger.info("NBD hard disconnect", metadata: ["reason": "\(reason)"])
        enterClosed()
        context?.close(promise: nil)
    }

    private func enterClosed() {
        if case .transmission(var machine, _) = phase { machine.connectionClosed() }
        phase = .closed
        parser.close()
    }

    /// Detaches the session from its export once the connection is closed and no export call is running,
    /// so the export is never torn down under a request. Runs at most once.
    func detachIfIdle() {
        guard case .closed = phase, requestsRunning == 0, let export = attachedExport else { return }
        attachedExport = nil
        catalog.detach(export, session: session)
        logger.debug("NBD session detached", metadata: ["nbd.export": "\(export.name)"])
    }
}
