import NBDProtocol
import NIOCore
import NIOSSL
import NIOTLS

/// The client end of one connection: runs `NBDClientHandshake`, then gives each outbound
/// `NBDClientCommand` a cookie, writes it, and matches reply chunks to it. All state is confined to the
/// channel's event loop; many commands may be in flight at once (pipelining), and replies may come back
/// in any order.
final class NBDClientHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = NBDClientCommand
    typealias OutboundOut = ByteBuffer

    private enum Phase {
        case handshake(NBDClientHandshake)
        case transmission(NBDClientSession)
        /// Closed or closing: commands fail with this error.
        case closed(NBDClientError)
    }

    private struct InFlight {
        var reply: NBDPendingReply
        let promise: EventLoopPromise<NBDClientReply>
    }

    private var phase: Phase
    private var parser = NBDServerFrameParser()
    private let negotiated: EventLoopPromise<NBDClientSession>
    private let handshakeTimeout: TimeAmount
    private var timeout: Scheduled<Void>?
    private var inFlight: [UInt64: InFlight] = [:]
    private var nextCookie: UInt64 = 1
    /// NBD_CMD_DISC was sent: replies to earlier requests still arrive, new requests are refused.
    private var disconnectSent = false
    private let counters: NBDClientCounters
    /// Credentials for STARTTLS (the handshake asks for it when the URI is `nbds://`).
    private let tls: NBDClientTLS?

    init(
        handshake: NBDClientHandshake,
        negotiated: EventLoopPromise<NBDClientSession>,
        handshakeTimeout: TimeAmount,
        counters: NBDClientCounters,
        tls: NBDClientTLS? = nil
    ) {
        self.tls = tls
        self.phase = .handshake(handshake)
        self.negotiated = negotiated
        self.handshakeTimeout = handshakeTimeout
        self.counters = counters
    }

    func channelActive(context: ChannelHandlerContext) {
        timeout = context.eventLoop.assumeIsolated().scheduleTask(in: handshakeTimeout) {
            guard case .handshake = self.phase else { return }
            self.fail(.negotiationFailed(NBDNegotiationError("no answer within \(self.handshakeTimeout)")), context)
        }
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let bytes = unwrapInboundIn(data)
        counters.received(bytes.readableBytes)
        parser.append(bytes)
        do {
            while !isClosed, let message = try parser.next() {
                try handle(message, context: context)
            }
        } catch let error as NBDClientError {
            fail(error, context)
        } catch {
            fail(.protocolViolation("\(error)"), context)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        fail(.connectionClosed, context)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        fail(.connectionClosed, context)
    }

    // MARK: inbound

    private func handle(_ message: NBDServerMessage, context: ChannelHandlerContext) throws(NBDClientError) {
        switch phase {
        case .handshake(var machine):
            let action: NBDClientHandshake.Action
            do {
                action = try machine.receive(message)
            } catch {
                throw .negotiationFailed(error)
            }
            phase = .handshake(machine)
            switch action {
            case .send(let buffer):
                counters.sent(buffer.readableBytes)
                context.writeAndFlush(wrapOutboundOut(buffer), promise: nil)
            case .wait:
                break
            case .finished(let session):
                timeout?.cancel()
                phase = .transmission(session)
                parser.enterTransmission()
                negotiated.succeed(session)
            case .startTLS:
                try startTLS(context: context)
            }
        case .transmission:
            try handleReply(message)
        case .closed:
            break
        }
    }

    /// STARTTLS was acknowledged: the TLS handler goes in front of this one before any other byte moves;
    /// negotiation resumes when it reports the handshake done (`userInboundEventTriggered`).
    private func startTLS(context: ChannelHandlerContext) throws(NBDClientError) {
        guard let tls else { throw .protocolViolation("STARTTLS acknowledged without TLS credentials") }
        guard parser.bufferedBytes == 0 else { throw .protocolViolation("data after the STARTTLS reply") }
        do {
            try context.pipeline.syncOperations.addHandler(try tls.makeHandler(), position: .before(self))
        } catch {
            throw .negotiationFailed(NBDNegotiationError("cannot start TLS: \(error)"))
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard case TLSUserEvent.handshakeCompleted = event, case .handshake(var machine) = phase else {
            return context.fireUserInboundEventTriggered(event)
        }
        do {
            let action = try machine.tlsEstablished()
            phase = .handshake(machine)
            if case .send(let buffer) = action {
                counters.sent(buffer.readableBytes)
                context.writeAndFlush(wrapOutboundOut(buffer), promise: nil)
            }
        } catch {
            fail(.negotiationFailed(error), context)
        }
    }

    private func handleReply(_ message: NBDServerMessage) throws(NBDClientError) {
        switch message {
        case .simpleReply(let cookie, let error):
            guard let request = inFlight.removeValue(forKey: cookie) else {
                throw .protocolViolation("simple reply to unknown cookie \(cookie)")
            }
            // "MUST NOT use a simple reply for NBD_CMD_READ" once structured replies are negotiated.
            guard request.reply.type != .read || error != nil else {
                throw .protocolViolation("simple reply to READ with structured replies negotiated")
            }
            if let error {
                request.promise.fail(NBDClientError.commandFailed(request.reply.type, error, message: ""))
            } else {
                request.promise.completeWith(Result { try request.reply.result() })
            }
        case .chunk(let chunk):
            guard var request = inFlight[chunk.cookie] else {
                throw .protocolViolation("reply chunk for unknown cookie \(chunk.cookie)")
            }
            do {
                try request.reply.add(try chunk.content())
            } catch let error as NBDProtocolError {
                throw .protocolViolation(error.message)
            } catch let error as NBDClientError {
                throw error
            } catch {
                throw .protocolViolation("\(error)")
            }
            if chunk.isFinal {
                inFlight[chunk.cookie] = nil
                request.promise.completeWith(Result { try request.reply.result() })
            } else {
                inFlight[chunk.cookie] = request
            }
        case .greeting, .optionReply:
            throw .protocolViolation("handshake message during transmission")
        }
    }

    // MARK: outbound

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let command = unwrapOutboundIn(data)
        guard case .transmission = phase, !disconnectSent else {
            let error: NBDClientError = if case .closed(let error) = phase { error } else { .connectionClosed }
            command.reply?.fail(error)
            promise?.fail(error)
            return
        }
        let cookie = nextCookie
        nextCookie &+= 1
        var header = context.channel.allocator.buffer(capacity: 28)
        header.writeNBDRequestHeader(
            type: command.type, flags: command.flags, cookie: cookie, offset: command.offset, length: command.length)
        counters.sent(
            header.readableBytes + command.payload.reduce(0) { $0 + $1.readableBytes }, request: command.reply != nil)
        if let reply = command.reply {
            let pending = NBDPendingReply(
                type: command.type, offset: command.offset, length: command.length,
                allocator: context.channel.allocator)
            inFlight[cookie] = InFlight(reply: pending, promise: reply)
        }
        let buffers = [header] + command.payload
        for buffer in buffers.dropLast() {
            context.write(wrapOutboundOut(buffer), promise: nil)
        }
        context.write(wrapOutboundOut(buffers.last!), promise: promise)
        // "A client MUST NOT send anything to the server after sending an NBD_CMD_DISC command."
        if command.type == .disconnect { disconnectSent = true }
    }

    // MARK: failure

    private var isClosed: Bool {
        if case .closed = phase { return true }
        return false
    }

    /// Fails the handshake or every request in flight with `error`, once, and closes the connection.
    private func fail(_ error: NBDClientError, _ context: ChannelHandlerContext) {
        let wasNegotiating: Bool
        switch phase {
        case .handshake:
            timeout?.cancel()
            negotiated.fail(error)
            wasNegotiating = true
        case .transmission:
            wasNegotiating = false
        case .closed:
            return
        }
        phase = .closed(error)
        parser.close()
        let requests = inFlight.values
        inFlight = [:]
        for request in requests { request.promise.fail(error) }
        if wasNegotiating, case .negotiationFailed(let negotiation) = error, negotiation.refusedOption != nil {
            // The server refused something this client needs, which is no protocol violation: proto.md
            // wants a soft disconnect (NBD_OPT_ABORT), and a server "SHOULD gracefully handle the client
            // sending an NBD_OPT_ABORT and closing the connection without waiting for a reply".
            var abort = context.channel.allocator.buffer(capacity: 16)
            abort.writeNBDOption(.abort)
            counters.sent(abort.readableBytes)
            context.writeAndFlush(wrapOutboundOut(abort)).assumeIsolated().whenComplete { _ in
                context.close(promise: nil)
            }
            return
        }
        context.close(promise: nil)
    }
}
