import NBDProtocol
import NIOCore

extension NBDConnectionHandler {
    /// NBD_CMD_CAIRN_COPY_AND_WRITE, already validated (context negotiated, writable export, payload and
    /// range sound): hands the export the payload's fields and the buffer, a slice of the receive buffer.
    func copyAndWrite(_ request: NBDRequest, on export: any NBDExport, style: NBDReplyStyle, ticket: Ticket) {
        guard let context else { return finish(ticket) }
        guard case .data(let bytes) = request.payload, let payload = NBDCopyAndWritePayload(decoding: bytes) else {
            let rejection = NBDRequestRejection(.invalid, "\(request.type) without its payload")
            return sendCompletion(rejection, for: request, style: style, ticket: ticket)
        }
        let completion = export.copyAndWrite(
            target: request.offset,
            source: payload.sourceOffset,
            copySize: payload.copySize,
            buffer: payload.buffer,
            bufferOffset: payload.bufferOffset,
            fua: request.flags.contains(.fua),
            eventLoop: context.eventLoop
        )
        completeWithoutData(request, completion, style: style, ticket: ticket)
    }
}
