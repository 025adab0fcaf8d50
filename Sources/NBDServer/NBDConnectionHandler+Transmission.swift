import Logging
import NBDProtocol
import NIOCore

extension NBDConnectionHandler {
    typealias Ticket = NBDTransmissionStateMachine.Ticket

    func handleRequest(_ request: NBDRequest) {
        guard case .transmission(var machine, let export) = phase else { return }
        let action = machine.requestReceived(request)
        phase = .transmission(machine, export)
        switch action {
        case .execute(let request, let ticket):
            execute(request, on: export, ticket: ticket, style: machine.session.replyStyle)
        case .reject(let request, let rejection, let ticket):
            logger.debug(
                "NBD request refused",
                metadata: [
                    "nbd.command": "\(request.type)", "error": "\(rejection.error)", "reason": "\(rejection.message)",
                ]
            )
            sendCompletion(rejection, for: request, style: machine.session.replyStyle, ticket: ticket)
        case .disconnect(let closeNow):
            // "A client MUST NOT send anything to the server after sending an NBD_CMD_DISC command."
            parser.close()
            logger.debug("NBD client sent DISC", metadata: ["nbd.running": "\(requestsRunning)"])
            if closeNow { softClose("client disconnected") }
        case .ignore:
            break
        }
    }

    /// Runs one validated request against the export and replies when its future completes.
    private func execute(_ request: NBDRequest, on export: any NBDExport, ticket: Ticket, style: NBDReplyStyle) {
        guard let context else { return }
        let eventLoop = context.eventLoop
        let fua = request.flags.contains(.fua)
        // A zero length is a successful no-op (see NBDRequestValidator.validateRange); BLOCK_STATUS and
        // COPY_AND_WRITE (whose payload is never empty) of zero length were refused there.
        if request.length == 0, request.type != .flush {
            return sendCompletion(nil, for: request, style: style, ticket: ticket)
        }
        let completion: EventLoopFuture<Void>
        switch request.type {
        case .read:
            return read(request, from: export, style: style, ticket: ticket)
        case .blockStatus:
            return blockStatus(request, from: export, style: style, ticket: ticket)
        case .cairnCopyAndWrite:
            return copyAndWrite(request, on: export, style: style, ticket: ticket)
        case .write:
            guard case .data(let data) = request.payload else {
                return sendCompletion(
                    NBDRequestRejection(.invalid, "WRITE without payload"),
                    for: request,
                    style: style,
                    ticket: ticket
                )
            }
            completion = export.write(offset: request.offset, data: data, fua: fua, eventLoop: eventLoop)
        case .flush:
            completion = export.flush(eventLoop: eventLoop)
        case .trim:
            completion = export.trim(offset: request.offset, length: request.length, fua: fua, eventLoop: eventLoop)
        case .writeZeroes:
            completion = export.writeZeroes(
                offset: request.offset,
                length: request.length,
                punch: !request.flags.contains(.noHole),
                fast: request.flags.contains(.fastZero),
                fua: fua,
                eventLoop: eventLoop
            )
        case .cache:
            completion = export.cache(offset: request.offset, length: request.length, eventLoop: eventLoop)
        default:
            return sendCompletion(
                NBDRequestRejection(.invalid, "unknown command"),
                for: request,
                style: style,
                ticket: ticket
            )
        }
        completeWithoutData(request, completion, style: style, ticket: ticket)
    }

    /// Replies success or the export's error once `completion` is done.
    func completeWithoutData(
        _ request: NBDRequest,
        _ completion: EventLoopFuture<Void>,
        style: NBDReplyStyle,
        ticket: Ticket
    ) {
        whenExportCompletes(completion) { result in
            switch result {
            case .success:
                self.sendCompletion(nil, for: request, style: style, ticket: ticket)
            case .failure(let error):
                self.sendFailure(error, for: request, style: style, ticket: ticket)
            }
        }
    }

    /// Runs `body` on this connection's event loop when an export future completes, wherever it completes.
    func whenExportCompletes<Value: Sendable>(
        _ future: EventLoopFuture<Value>,
        _ body: @escaping (Result<Value, any Error>) -> Void
    ) {
        guard let context else { return }
        requestsRunning += 1
        future.hop(to: context.eventLoop).assumeIsolated().whenComplete { result in
            self.requestsRunning -= 1
            body(result)
            self.detachIfIdle()
        }
    }

    func rejection(for error: any Error, request: NBDRequest) -> NBDRequestRejection {
        let rejection = NBDRequestRejection(exportFailure: error, request: request)
        logger.info(
            "NBD export error",
            metadata: [
                "nbd.command": "\(request.type)", "error": "\(rejection.error)", "reason": "\(rejection.message)",
            ]
        )
        return rejection
    }

    /// Replies to a request the export failed with the error that failure maps to (simple replies carry
    /// no payload after an error: "If it chooses not to [disconnect], it MUST NOT send any payload").
    func sendFailure(_ error: any Error, for request: NBDRequest, style: NBDReplyStyle, ticket: Ticket) {
        sendCompletion(rejection(for: error, request: request), for: request, style: style, ticket: ticket)
    }

    /// Replies success or one error to a request without reply data.
    func sendCompletion(
        _ rejection: NBDRequestRejection?,
        for request: NBDRequest,
        style: NBDReplyStyle,
        ticket: Ticket
    ) {
        guard let context else { return finish(ticket) }
        var buffer = context.channel.allocator.buffer(capacity: 64)
        buffer.writeNBDCompletion(rejection, for: request, style: style)
        send([buffer], ticket: ticket)
    }

    /// Writes the buffers of one reply and releases its slot once they are on the socket (or failed):
    /// holding the slot until then also bounds what a client that stops reading can queue in memory.
    func send(_ buffers: [ByteBuffer], ticket: Ticket) {
        guard let context, let last = buffers.last else { return finish(ticket) }
        for buffer in buffers.dropLast() {
            context.write(wrapOutboundOut(buffer), promise: nil)
        }
        context.write(wrapOutboundOut(last)).assumeIsolated().whenComplete { _ in
            self.finish(ticket)
        }
        scheduleFlush()
    }

    /// Flushes once for every reply queued in this pass of the event loop: replies completing together
    /// (a burst of cached reads, completions arriving from the export's threads) share one writev instead
    /// of one each, as qemu-nbd corks its socket.
    func scheduleFlush() {
        guard let context, !flushScheduled else { return }
        flushScheduled = true
        context.eventLoop.assumeIsolated().execute {
            self.flushScheduled = false
            self.context?.flush()
        }
    }

    /// A reply is written: free its slot, close if DISC or shutdown was waiting for it, else resume input.
    func finish(_ ticket: Ticket) {
        guard case .transmission(var machine, let export) = phase else { return }
        let closeNow = machine.requestFinished(ticket)
        phase = .transmission(machine, export)
        if closeNow {
            softClose("all requests answered")
        } else {
            processInput()
            livenessEvent(bytesReceived: false)
        }
    }
}
