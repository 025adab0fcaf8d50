import Logging
import NBDProtocol
import NIOCore
import NIOSSL
import SwiftASN1
import X509

extension NBDConnectionHandler {
    /// Executes one handshake action.
    func run(_ action: NBDHandshakeStateMachine.Action) {
        guard let context else { return }
        switch action {
        case .none:
            break
        case .sendGreeting(let flags):
            var buffer = context.channel.allocator.buffer(capacity: 18)
            buffer.writeNBDGreeting(flags: flags)
            context.writeAndFlush(wrapOutboundOut(buffer), promise: nil)
        case .reply(let option, let replies):
            context.writeAndFlush(wrapOutboundOut(encode(replies, option: option, context: context)), promise: nil)
        case .attach(let name, let option):
            attach(name: name, option: option)
        case .enterTransmission(let entry):
            enterTransmission(entry, context: context)
        case .replyAndClose(let option, let replies):
            context.write(wrapOutboundOut(encode(replies, option: option, context: context)), promise: nil)
            softClose("client aborted negotiation")
        case .startTLS:
            startTLS(context: context)
        case .close(let reason):
            hardClose(reason)
        }
    }

    /// proto.md: the server replies ACK in plaintext, then "the client and server SHOULD immediately start
    /// the TLS handshake". The TLS handler goes in front of this one in the same event-loop turn as the ACK
    /// write, so no byte of the client's handshake can reach the NBD parser; a client that sent anything
    /// after STARTTLS before the ACK broke the protocol and is disconnected.
    private func startTLS(context: ChannelHandlerContext) {
        guard let tls = configuration.tls else { return hardClose("STARTTLS without a TLS configuration") }
        guard parser.bufferedBytes == 0 else { return hardClose("data after STARTTLS before the TLS handshake") }
        var buffer = context.channel.allocator.buffer(capacity: 20)
        buffer.writeNBDOptionReply(.ack, option: .startTLS)
        context.writeAndFlush(wrapOutboundOut(buffer), promise: nil)
        awaitingTLS = true
        do {
            try context.pipeline.syncOperations.addHandler(
                tls.makeHandler(identity: pskIdentity), position: .before(self))
        } catch {
            return hardClose("cannot start TLS: \(error)")
        }
        // With autoRead off the TLS handler keeps reading by itself until the handshake is done.
        readPending = true
        context.read()
    }

    /// The TLS handshake finished: negotiation starts over, encrypted.
    /// The PSK username the client proved, or the verified client certificate's subject when the server
    /// asked for one (a client CA is set).
    private func peerIdentity(context: ChannelHandlerContext?) -> String? {
        if let username = pskIdentity.username { return username }
        guard configuration.tls?.verifiesClients == true, let context,
            let handler = try? context.pipeline.syncOperations.handler(type: NIOSSLServerHandler.self),
            let der = try? handler.peerCertificate?.toDERBytes(),
            let certificate = try? Certificate(derEncoded: der)
        else { return nil }
        return certificate.subject.description
    }

    func tlsEstablished() {
        guard case .handshake(var machine) = phase, awaitingTLS else { return hardClose("unexpected TLS handshake") }
        awaitingTLS = false
        sessionReference.info.tls = true
        sessionReference.info.clientIdentity = peerIdentity(context: self.context)
        let action = machine.tlsEstablished()
        phase = .handshake(machine)
        logger.debug("NBD TLS established")
        run(action)
        readPending = false
        processInput()
    }

    private func encode(
        _ replies: [NBDOptionReply],
        option: NBDOptionCode,
        context: ChannelHandlerContext
    ) -> ByteBuffer {
        var buffer = context.channel.allocator.buffer(capacity: 64)
        for reply in replies {
            buffer.writeNBDOptionReply(reply, option: option)
        }
        return buffer
    }

    /// Asks the catalog to attach; the handshake state machine decides what the answer means.
    private func attach(name: String, option: NBDOptionCode) {
        guard case .handshake(var machine) = phase else { return }
        let action: NBDHandshakeStateMachine.Action
        do {
            let export = try catalog.attach(name: name, session: session)
            attachedExport = export
            action = machine.attachSucceeded(
                NBDExportDescription(export: export, maximumPayload: NBDLimits.maximumPayload)
            )
        } catch let error as NBDExportError {
            logger.info("NBD attach refused", metadata: ["nbd.export": "\(name)", "error": "\(error.message)"])
            action = machine.attachFailed(error.optionReplyType, message: error.message)
        } catch {
            logger.warning("NBD attach failed", metadata: ["nbd.export": "\(name)", "error": "\(error)"])
            action = machine.attachFailed(.errorUnknown, message: "export is not available")
        }
        phase = .handshake(machine)
        run(action)
    }

    private func enterTransmission(_ entry: NBDTransmissionEntry, context: ChannelHandlerContext) {
        guard let export = attachedExport else { return hardClose("transmission without an export") }
        var buffer = context.channel.allocator.buffer(capacity: 256)
        switch entry.reply {
        case .optionReplies(let option, let replies):
            for reply in replies { buffer.writeNBDOptionReply(reply, option: option) }
        case .exportName(let size, let flags, let noZeroes):
            buffer.writeNBDExportNameReply(size: size, flags: flags, noZeroes: noZeroes)
        }
        context.writeAndFlush(wrapOutboundOut(buffer), promise: nil)
        handshakeTimer?.cancel()
        handshakeTimer = nil
        parser.enterTransmission(extendedHeaders: entry.session.extendedHeaders)
        phase = .transmission(
            NBDTransmissionStateMachine(session: entry.session, limits: configuration.flowControl),
            export
        )
        liveness = NBDLivenessStateMachine(
            timeouts: configuration.transmissionTimeouts, now: NIODeadline.now().uptimeNanoseconds)
        livenessEvent(bytesReceived: true)
        logger.info(
            "NBD transmission started",
            metadata: [
                "nbd.export": "\(entry.session.export.name)",
                "nbd.replies": "\(entry.session.replyStyle)",
                "nbd.contexts": "\(entry.session.metaContexts.map(\.name))",
            ]
        )
    }
}
