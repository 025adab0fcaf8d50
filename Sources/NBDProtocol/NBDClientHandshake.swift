import NIOCore

/// The client side of fixed newstyle negotiation as a pure state machine, the counterpart of
/// `NBDHandshakeStateMachine`:
///
/// 0. with TLS: greeting → client flags and NBD_OPT_STARTTLS; after its ACK the connection runs the TLS
///    handshake and calls `tlsEstablished()`, and negotiation goes on encrypted from step 1's option;
/// 1. greeting → client flags and NBD_OPT_STRUCTURED_REPLY (required: it frames READ replies without
///    knowing the request, and metadata contexts depend on it);
/// 2. NBD_OPT_SET_META_CONTEXT with the wanted contexts, if any (unknown ones are simply not selected);
/// 3. NBD_OPT_GO asking for NBD_INFO_BLOCK_SIZE, which commits the client to the server's constraints.
///
/// There is no NBD_OPT_EXPORT_NAME fallback: a server without GO cannot report block sizes or errors, and
/// every server with structured replies has GO. Extended headers are not negotiated.
public struct NBDClientHandshake: Sendable {
    /// What the connection must do next.
    public enum Action: Sendable {
        /// Send these bytes, then wait for more messages.
        case send(ByteBuffer)
        /// Wait for more messages.
        case wait
        /// NBD_OPT_GO was acknowledged: switch the parser to transmission and start sending requests.
        case finished(NBDClientSession)
        /// STARTTLS was acknowledged: run the TLS handshake before any other byte, then call
        /// `tlsEstablished()`.
        case startTLS
    }

    enum State: Sendable {
        case awaitingGreeting
        case awaitingStartTLS
        case awaitingTLSHandshake
        case awaitingStructuredReply
        case awaitingMetaContexts([NBDSelectedMetaContext])
        case awaitingGo(GoReplies)
        case finished
    }

    /// What the replies to GO have told so far.
    struct GoReplies: Sendable {
        var metaContexts: [NBDSelectedMetaContext]
        var export: (size: UInt64, flags: NBDTransmissionFlags)?
        var blockSizes: NBDBlockSizeConstraints?
    }

    public let exportName: String
    public let wantedMetaContexts: [String]
    /// Upgrade to TLS before anything else (an `nbds://` URI); a server that refuses is an error, never a
    /// silent fall-back to plaintext.
    public let usesTLS: Bool
    var state: State = .awaitingGreeting

    /// - Parameters:
    ///   - exportName: the export to enter ("" is the default export).
    ///   - metaContexts: contexts to select; the session lists those the server granted.
    ///   - tls: send NBD_OPT_STARTTLS first.
    public init(exportName: String, metaContexts: [String] = [], tls: Bool = false) {
        self.exportName = exportName
        self.wantedMetaContexts = metaContexts
        self.usesTLS = tls
    }

    /// The TLS handshake after STARTTLS succeeded: negotiation continues, encrypted.
    public mutating func tlsEstablished() throws(NBDNegotiationError) -> Action {
        guard case .awaitingTLSHandshake = state else { throw NBDNegotiationError("TLS came up unexpectedly") }
        return sendStructuredReply(ByteBuffer())
    }

    /// One message from the server. Throws when the server refuses something this client needs or
    /// breaks the protocol; the connection should then be closed.
    public mutating func receive(_ message: NBDServerMessage) throws(NBDNegotiationError) -> Action {
        switch (state, message) {
        case (.awaitingGreeting, .greeting(let flags)):
            return try greeted(flags)
        case (.awaitingStartTLS, .optionReply(let option, let type, let data)):
            guard case .ack = try decode(option, type, data, expecting: .startTLS) else {
                throw NBDNegotiationError("STARTTLS answered with \(type), not ACK")
            }
            state = .awaitingTLSHandshake
            return .startTLS
        case (.awaitingStructuredReply, .optionReply(let option, let type, let data)):
            guard case .ack = try decode(option, type, data, expecting: .structuredReply) else {
                throw NBDNegotiationError("STRUCTURED_REPLY answered with \(type), not ACK")
            }
            return afterStructuredReplies()
        case (.awaitingMetaContexts(var selected), .optionReply(let option, let type, let data)):
            switch try decode(option, type, data, expecting: .setMetaContext) {
            case .metaContext(let id, let name):
                selected.append(NBDSelectedMetaContext(id: id, name: name))
                state = .awaitingMetaContexts(selected)
                return .wait
            case .ack:
                return sendGo(metaContexts: selected)
            default:
                throw NBDNegotiationError("SET_META_CONTEXT answered with \(type)")
            }
        case (.awaitingGo(var replies), .optionReply(let option, let type, let data)):
            let reply = try decode(option, type, data, expecting: .go)
            switch reply {
            case .info(.export(let size, let flags)):
                replies.export = (size, flags)
            case .info(.blockSize(let sizes)):
                replies.blockSizes = sizes
            case .ack:
                return try finish(replies)
            default:
                break  // NAME, DESCRIPTION and unknown information are not needed.
            }
            state = .awaitingGo(replies)
            return .wait
        default:
            throw NBDNegotiationError("unexpected \(message) during the handshake")
        }
    }

    private mutating func greeted(_ flags: NBDHandshakeFlags) throws(NBDNegotiationError) -> Action {
        // Without fixed newstyle a server cannot answer options (proto.md "Fixed newstyle negotiation").
        guard flags.contains(.fixedNewstyle) else {
            throw NBDNegotiationError("the server does not speak fixed newstyle negotiation")
        }
        // "MUST NOT be set if the server did not set NBD_FLAG_NO_ZEROES".
        var clientFlags: NBDClientFlags = [.fixedNewstyle]
        if flags.contains(.noZeroes) { clientFlags.insert(.noZeroes) }
        var buffer = ByteBuffer()
        buffer.writeNBDClientFlags(clientFlags)
        if usesTLS {
            // proto.md: nothing may follow STARTTLS until its reply; the TLS handshake comes next.
            buffer.writeNBDOption(.startTLS)
            state = .awaitingStartTLS
            return .send(buffer)
        }
        return sendStructuredReply(buffer)
    }

    private mutating func sendStructuredReply(_ prefix: ByteBuffer) -> Action {
        var buffer = prefix
        buffer.writeNBDOption(.structuredReply)
        state = .awaitingStructuredReply
        return .send(buffer)
    }

    private mutating func afterStructuredReplies() -> Action {
        guard !wantedMetaContexts.isEmpty else { return sendGo(metaContexts: []) }
        var buffer = ByteBuffer()
        buffer.writeNBDOption(
            .setMetaContext(NBDMetaContextRequest(exportName: exportName, queries: wantedMetaContexts)))
        state = .awaitingMetaContexts([])
        return .send(buffer)
    }

    private mutating func sendGo(metaContexts: [NBDSelectedMetaContext]) -> Action {
        var buffer = ByteBuffer()
        buffer.writeNBDOption(.go(NBDInfoRequest(exportName: exportName, requests: [.blockSize])))
        state = .awaitingGo(GoReplies(metaContexts: metaContexts))
        return .send(buffer)
    }

    private mutating func finish(_ replies: GoReplies) throws(NBDNegotiationError) -> Action {
        // "The server MUST send an NBD_INFO_EXPORT information type at some point before sending an
        // NBD_REP_ACK".
        guard let export = replies.export else {
            throw NBDNegotiationError("GO was acknowledged without NBD_INFO_EXPORT")
        }
        state = .finished
        return .finished(
            NBDClientSession(
                exportName: exportName,
                size: export.size,
                transmissionFlags: export.flags,
                blockSizes: replies.blockSizes ?? .protocolDefault,
                metaContexts: replies.metaContexts
            ))
    }

    /// Decodes a reply to `expected`; an error reply ends the handshake.
    private func decode(
        _ option: NBDOptionCode, _ type: NBDOptionReplyType, _ data: ByteBuffer, expecting expected: NBDOptionCode
    ) throws(NBDNegotiationError) -> NBDOptionReply? {
        guard option == expected else {
            throw NBDNegotiationError("reply to \(option) while waiting for \(expected)")
        }
        let reply: NBDOptionReply?
        do {
            reply = try NBDOptionReply.decoded(type: type, data: data)
        } catch {
            throw NBDNegotiationError("malformed reply to \(option): \(error.message)")
        }
        if case .error(let type, let message) = reply {
            throw NBDNegotiationError(refusedOption: option, reply: type, message ?? Self.explanation(of: option))
        }
        return reply
    }

    private static func explanation(of option: NBDOptionCode) -> String {
        switch option {
        case .structuredReply: "structured replies are required"
        case .go: "cannot enter transmission"
        case .startTLS: "the server does not offer TLS"
        default: "no message"
        }
    }
}
