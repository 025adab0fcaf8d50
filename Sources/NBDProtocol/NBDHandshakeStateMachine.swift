/// The server side of fixed newstyle negotiation as a pure state machine.
///
/// Each event returns the one `Action` the connection must perform; the machine never does I/O. The
/// only side effect it cannot decide alone, attaching to an export, is asked for with `.attach` and
/// answered with `attachSucceeded(_:)` or `attachFailed(_:message:)`.
public struct NBDHandshakeStateMachine: Sendable {
    /// What the connection must do next.
    public enum Action: Sendable, Hashable {
        /// Send the greeting, then read the client flags.
        case sendGreeting(NBDHandshakeFlags)
        /// Send these replies to `option`, then read the next option.
        case reply(NBDOptionCode, [NBDOptionReply])
        /// Attach to the export (the catalog may refuse), then report back.
        case attach(exportName: String, option: NBDOptionCode)
        /// Send the entry reply and switch the connection to transmission.
        case enterTransmission(NBDTransmissionEntry)
        /// Send these replies, then close (a soft disconnect the client asked for with NBD_OPT_ABORT).
        case replyAndClose(NBDOptionCode, [NBDOptionReply])
        /// Send NBD_REP_ACK to STARTTLS, run the TLS handshake, then call `tlsEstablished()`.
        case startTLS
        /// Hard disconnect: close without sending anything.
        case close(reason: String)
        /// Nothing to do; wait for input.
        case none
    }

    enum State: Sendable, Hashable {
        case idle
        case awaitingClientFlags
        case negotiating
        case awaitingAttach(PendingAttach)
        case awaitingTLS
        case transmission
        case closed
    }

    struct PendingAttach: Sendable, Hashable {
        var option: NBDOptionCode
        var requestedName: String
        var infoRequests: [NBDInfoType]
    }

    /// Negotiation results that NBD_OPT_STARTTLS wipes (proto.md: "the server MUST NOT preserve any
    /// negotiation state").
    struct Negotiated: Sendable, Hashable {
        var structuredReplies = false
        var extendedHeaders = false
        /// The export named by the last SET_META_CONTEXT and the contexts it selected.
        var metaContextExport: String?
        var metaContexts: [NBDSelectedMetaContext] = []

        var replyStyle: NBDReplyStyle {
            extendedHeaders ? .extended : structuredReplies ? .structured : .simple
        }
    }

    /// Handshake flags this server advertises.
    public static let advertisedFlags: NBDHandshakeFlags = [.fixedNewstyle, .noZeroes]

    let configuration: NBDHandshakeConfiguration
    let directory: any NBDExportDirectory
    var state: State = .idle
    var clientFlags: NBDClientFlags = []
    var negotiated = Negotiated()
    var tlsActive = false
    var shuttingDown = false
    var optionCount = 0

    public init(configuration: NBDHandshakeConfiguration = .init(), directory: any NBDExportDirectory) {
        self.configuration = configuration
        self.directory = directory
    }

    /// True once the handshake has handed the connection to the transmission phase.
    public var isInTransmission: Bool { state == .transmission }

    /// The connection is up: greet the client.
    public mutating func start() -> Action {
        guard state == .idle else { return closeNow("greeting sent twice") }
        state = .awaitingClientFlags
        return .sendGreeting(Self.advertisedFlags)
    }

    /// The client answered the greeting.
    public mutating func clientFlagsReceived(_ flags: NBDClientFlags) -> Action {
        guard state == .awaitingClientFlags else { return closeNow("unexpected client flags") }
        // proto.md "Client flags": "the server MUST drop the TCP connection if the client sets an unknown
        // flag, or a flag that does not match something advertised by the server".
        let unknown = flags.subtracting(.known)
        guard unknown.isEmpty else {
            return closeNow("unknown client flags 0x\(String(unknown.rawValue, radix: 16))")
        }
        clientFlags = flags
        state = .negotiating
        return .none
    }

    /// The server is shutting down: further options (but ABORT) get NBD_REP_ERR_SHUTDOWN.
    public mutating func shutdownRequested() {
        shuttingDown = true
    }

    /// The TLS handshake that followed `.startTLS` completed: negotiation starts over under TLS.
    public mutating func tlsEstablished() -> Action {
        guard state == .awaitingTLS else { return closeNow("TLS established without STARTTLS") }
        tlsActive = true
        negotiated = Negotiated()
        state = .negotiating
        return .none
    }

    /// The catalog attached the session to the export named in the pending GO or EXPORT_NAME.
    public mutating func attachSucceeded(_ export: NBDExportDescription) -> Action {
        guard case .awaitingAttach(let pending) = state else { return closeNow("attach result without attach") }
        let session = NBDNegotiatedSession(
            export: export,
            transmissionFlags: transmissionFlags(for: export),
            replyStyle: negotiated.replyStyle,
            metaContexts: metaContextsForTransmission(exportName: pending.requestedName, export: export)
        )
        state = .transmission
        if pending.option == .exportName {
            let reply = NBDTransmissionEntry.Reply.exportName(
                size: export.size,
                flags: session.transmissionFlags,
                noZeroes: clientFlags.contains(.noZeroes)
            )
            return .enterTransmission(NBDTransmissionEntry(session: session, reply: reply))
        }
        let replies = infoReplies(for: export, requests: pending.infoRequests) + [.ack]
        return .enterTransmission(NBDTransmissionEntry(session: session, reply: .optionReplies(.go, replies)))
    }

    /// The catalog refused to attach. GO gets `reply` (an `NBD_REP_ERR_*`); EXPORT_NAME cannot report
    /// errors, so proto.md requires a hard disconnect.
    public mutating func attachFailed(_ reply: NBDOptionReplyType, message: String) -> Action {
        guard case .awaitingAttach(let pending) = state else { return closeNow("attach result without attach") }
        if pending.option == .exportName {
            return closeNow("EXPORT_NAME \"\(pending.requestedName)\" refused: \(message)")
        }
        state = .negotiating
        return .reply(pending.option, [.error(reply, message: message)])
    }

    mutating func closeNow(_ reason: String) -> Action {
        state = .closed
        return .close(reason: reason)
    }

    /// Flags as sent: the export's, plus HAS_FLAGS, plus SEND_DF once chunked replies are negotiated
    /// (proto.md: SEND_DF "MUST [be left] clear if structured replies have not been negotiated").
    func transmissionFlags(for export: NBDExportDescription) -> NBDTransmissionFlags {
        var flags = export.flags.union(.hasFlags)
        if negotiated.replyStyle == .simple {
            flags.remove(.sendDF)
        } else {
            flags.insert(.sendDF)
        }
        // SEND_FAST_ZERO "MUST [be] 0 if NBD_FLAG_SEND_WRITE_ZEROES is not set".
        if !flags.contains(.sendWriteZeroes) { flags.remove(.sendFastZero) }
        return flags
    }
}

/// How the handshake ends and what the transmission phase starts with.
public struct NBDTransmissionEntry: Sendable, Hashable {
    /// The last thing the handshake sends.
    public enum Reply: Sendable, Hashable {
        /// NBD_OPT_GO: NBD_REP_INFO replies then NBD_REP_ACK.
        case optionReplies(NBDOptionCode, [NBDOptionReply])
        /// NBD_OPT_EXPORT_NAME: size, flags, and the zero padding unless NO_ZEROES was negotiated.
        case exportName(size: UInt64, flags: NBDTransmissionFlags, noZeroes: Bool)
    }

    public var session: NBDNegotiatedSession
    public var reply: Reply

    public init(session: NBDNegotiatedSession, reply: Reply) {
        self.session = session
        self.reply = reply
    }
}
