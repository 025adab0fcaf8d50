import ISCSIProtocol
import Logging
import NIOCore

/// One initiator connection (= one session: MaxConnections is 1). Owns the PDU decoder, the login state
/// machine and then the session's command window; the single place their actions are carried out. All
/// state is confined to the channel's event loop.
final class ISCSIConnectionHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    enum Phase {
        case login(ISCSILoginStateMachine)
        /// Full feature phase of a discovery session: Text (SendTargets), NOP and Logout only.
        case discovery(ISCSISessionParameters)
        case normal(ISCSISessionParameters, any ISCSILogicalUnit)
        /// Logged out, failed or disconnected: completions drain, nothing new starts.
        case closed
    }

    let catalog: any ISCSITargetCatalog
    let configuration: ISCSIServerConfiguration
    var initiator: ISCSIInitiatorInfo
    /// "host:port" of the listener this connection came in on (SendTargets' TargetAddress).
    let portal: String
    let logger: Logger
    var phase: Phase
    var decoder = ISCSIPDUDecoder()
    var received = ByteBuffer()
    var window = ISCSICommandWindow(expCmdSN: 0, statSN: 0)
    var context: ChannelHandlerContext?
    var loginTimer: Scheduled<Void>?
    /// Writes waiting for their data (Data-Out), by initiator task tag.
    var pendingWrites: [UInt32: PendingWrite] = [:]
    /// Commands running in the logical unit; an aborted one completes without a response.
    var runningTasks: Set<UInt32> = []
    var abortedTasks: Set<UInt32> = []
    var nextTransferTag: UInt32 = 1
    var headerDigest = false
    var dataDigest = false
    var flushScheduled = false
    /// RECEIVE COPY RESULTS' held results, by list identifier (this session's EXTENDED COPYs).
    var copyResults: [UInt8: SCSICopyStatus] = [:]
    /// The target's counters (normal sessions, when the catalog keeps them).
    var metrics: (any ISCSITargetMetrics)?

    /// The server's list of connections, told when the login completes (status page).
    let registry: ISCSIConnectionRegistry?
    /// Every unit's reservations, shared by the server's sessions.
    let reservations: ISCSIReservationTable
    /// This session's I_T nexus (normal sessions, once logged in).
    var nexus: SCSINexus?
    /// When the nexus last had no unit attention pending (lets a command skip the table's lock).
    var attentionClearance: ISCSIUnitAttentionTable.Clearance?

    init(
        initiator: ISCSIInitiatorInfo, portal: String, catalog: any ISCSITargetCatalog,
        configuration: ISCSIServerConfiguration, tsih: UInt16, logger: Logger, registry: ISCSIConnectionRegistry? = nil,
        reservations: ISCSIReservationTable = ISCSIReservationTable()
    ) {
        self.registry = registry
        self.reservations = reservations
        self.initiator = initiator
        self.portal = portal
        self.catalog = catalog
        self.configuration = configuration
        self.logger = logger
        var random = SystemRandomNumberGenerator()
        self.phase = .login(
            ISCSILoginStateMachine(
                tsih: tsih, chap: configuration.chap, chapIdentifier: random.next(),
                chapChallenge: (0..<ISCSIChap.challengeLength).map { _ in random.next() }))
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func channelActive(context: ChannelHandlerContext) {
        loginTimer = context.eventLoop.assumeIsolated().scheduleTask(in: configuration.loginTimeout) { [self] in
            if case .login = phase {
                logger.notice("closing a connection whose login did not finish in time")
                close()
            }
        }
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        loginTimer?.cancel()
        endSession()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        logger.debug("connection error", metadata: ["error": "\(error)"])
        close()
    }

    /// Detaches the logical unit (once) and stops taking PDUs. The end of the session is the loss of its
    /// I_T nexus: a RESERVE it holds ends.
    func endSession() {
        if case .normal(_, let unit) = phase {
            if let nexus {
                reservations.withUnit(unit.identifier) { $0.nexusLost(nexus) }
                reservations.unitAttentions.departed(nexus, unit: unit.identifier)
            }
            catalog.detach(unit, initiator: initiator)
        }
        phase = .closed
        pendingWrites.removeAll()
    }

    func close() {
        endSession()
        context?.close(promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        received.writeBuffer(&bytes)
        while true {
            if case .closed = phase { return }
            let pdu: ISCSIPDU?
            do {
                pdu = try decoder.decode(&received)
            } catch .dataDigestMismatch(let header) {
                // The PDU is dropped; the initiator learns why (RFC 7143 §7.8).
                send(.reject(.dataDigestError, rejected: header), status: false)
                continue
            } catch {
                logger.notice("closing connection on a malformed PDU stream", metadata: ["error": "\(error)"])
                close()
                return
            }
            guard let pdu else { break }
            handle(pdu)
        }
        received.discardReadBytes()
    }

    func handle(_ pdu: ISCSIPDU) {
        switch phase {
        case .login(var machine):
            handleLogin(pdu, &machine)
        case .discovery, .normal:
            handleFullFeature(pdu)
        case .closed:
            return
        }
    }

    func handleLogin(_ pdu: ISCSIPDU, _ machine: inout ISCSILoginStateMachine) {
        let initiator = self.initiator
        let catalog = self.catalog
        let action = machine.receive(pdu) { target, chapName in
            var named = initiator
            named.chapName = chapName
            return catalog.targetExists(target, initiator: named)
        }
        switch action {
        case .respond(let response):
            phase = .login(machine)
            write(response)
            flush()
        case .fail(let response, let status):
            logger.notice(
                "login refused",
                metadata: ["status": "\(status)", "iscsi.initiator": "\(machine.parameters.initiatorName)"])
            write(response)
            flush()
            close()
        case .complete(var response, let parameters):
            self.initiator.initiatorName = parameters.initiatorName
            self.initiator.chapName = parameters.authenticatedName
            window = ISCSICommandWindow(expCmdSN: parameters.expCmdSN, statSN: parameters.statSN)
            if parameters.sessionType == .discovery {
                phase = .discovery(parameters)
            } else {
                do {
                    let unit = try catalog.attach(target: parameters.targetName ?? "", initiator: self.initiator)
                    phase = .normal(parameters, unit)
                    let nexus = SCSINexus(initiatorName: parameters.initiatorName, isid: parameters.isid)
                    self.nexus = nexus
                    // A nexus new since the target started gets POWER ON, RESET, OR BUS DEVICE RESET.
                    reservations.unitAttentions.arrived(nexus, unit: unit.identifier, capacity: unit.size)
                    metrics = catalog.metrics(target: parameters.targetName ?? "")
                } catch {
                    logger.notice("login refused: the target cannot be attached", metadata: ["error": "\(error)"])
                    response.setUInt16(ISCSILoginStateMachine.Status.targetError.rawValue, 36)
                    response.flags = response.flags & 0x0C  // No transit: the login failed.
                    response.data = ByteBuffer()
                    write(response)
                    flush()
                    close()
                    return
                }
            }
            loginTimer?.cancel()
            registry?.loggedIn(
                ISCSISessionSummary(
                    id: initiator.id, remoteAddress: initiator.remoteAddress, initiatorName: parameters.initiatorName,
                    chapName: parameters.authenticatedName,
                    target: parameters.sessionType == .normal ? parameters.targetName : nil))
            write(response)
            flush()
            // Digests and the declared segment size apply from the next PDU on (RFC 7143 §13.1, §13.12).
            decoder.headerDigest = parameters.headerDigest
            decoder.dataDigest = parameters.dataDigest
            decoder.maximumDataSegmentLength = parameters.targetMaxRecvDataSegmentLength
            headerDigest = parameters.headerDigest
            dataDigest = parameters.dataDigest
            logger.debug(
                "login complete",
                metadata: [
                    "iscsi.initiator": "\(parameters.initiatorName)", "iscsi.target": "\(parameters.targetName ?? "-")",
                ])
        }
    }

    var parameters: ISCSISessionParameters? {
        switch phase {
        case .discovery(let p), .normal(let p, _): p
        default: nil
        }
    }

    /// Queues `pdu` with the session's sequence numbers; `status`: it takes a StatSN.
    func send(_ pdu: ISCSIPDU, status: Bool = true) {
        var pdu = pdu
        let statSN = status ? window.takeStatSN() : window.nextStatSN
        pdu.setSequence(statSN: statSN, expCmdSN: window.expCmdSN, maxCmdSN: window.maxCmdSN)
        write(pdu)
    }

    func write(_ pdu: ISCSIPDU) {
        guard let context else { return }
        var out = context.channel.allocator.buffer(capacity: 48 + pdu.data.readableBytes + 16)
        pdu.encode(into: &out, headerDigest: headerDigest, dataDigest: dataDigest)
        context.write(wrapOutboundOut(out), promise: nil)
    }

    func flush() { context?.flush() }

    /// Flushes once after everything completing in this event-loop turn has been written: completions
    /// arrive in batches, and one write(2) for a batch beats one per response.
    func flushSoon() {
        guard !flushScheduled, let context else { return }
        flushScheduled = true
        context.eventLoop.assumeIsolated().execute { [self] in
            flushScheduled = false
            self.context?.flush()
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        context.flush()
        context.fireChannelReadComplete()
    }
}
