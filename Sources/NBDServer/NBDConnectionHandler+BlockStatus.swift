import Logging
import NBDProtocol
import NIOCore

extension NBDConnectionHandler {
    /// BLOCK_STATUS: one status chunk per selected context, the last one marked DONE. With extended
    /// headers every chunk is BLOCK_STATUS_EXT, never the 32-bit type.
    func blockStatus(_ request: NBDRequest, from export: any NBDExport, style: NBDReplyStyle, ticket: Ticket) {
        guard let context, case .transmission(let machine, _) = phase else { return finish(ticket) }
        let contexts = machine.session.metaContexts
        let futures = contexts.map { metaContext in
            export.blockStatus(
                context: metaContext.name,
                offset: request.offset,
                length: request.length,
                // REQ_ONE: the reply carries one extent, so the export need not compute more.
                maximumExtents: request.flags.contains(.requestOne) ? 1 : nil,
                eventLoop: context.eventLoop
            )
        }
        let all = EventLoopFuture.whenAllComplete(futures, on: context.eventLoop)
        whenExportCompletes(all) { result in
            // whenAllComplete itself never fails; each context's result is inside.
            guard case .success(let results) = result else { return }
            var chunks: [NBDReplyChunk] = []
            for (metaContext, contextResult) in zip(contexts, results) {
                switch contextResult {
                case .failure(let error):
                    return self.sendFailure(error, for: request, style: style, ticket: ticket)
                case .success(let extents):
                    guard
                        let descriptors = NBDBlockStatusShaper.descriptors(
                            from: extents.map { NBDBlockDescriptor(length: $0.length, flags: $0.flags) },
                            requestLength: request.length,
                            requestOne: request.flags.contains(.requestOne)
                        )
                    else {
                        self.logger.error(
                            "NBD export returned no extents",
                            metadata: ["nbd.context": "\(metaContext.name)"]
                        )
                        let rejection = NBDRequestRejection(.ioError, "internal error")
                        return self.sendCompletion(rejection, for: request, style: style, ticket: ticket)
                    }
                    chunks.append(
                        style == .extended
                            ? .blockStatusExtended(contextID: metaContext.id, descriptors: descriptors)
                            : .blockStatus(contextID: metaContext.id, descriptors: descriptors)
                    )
                }
            }
            // The client may have gone while the export looked the extents up.
            guard let allocator = self.context?.channel.allocator else { return self.finish(ticket) }
            self.send(self.encode(chunks, for: request, extended: style == .extended, allocator: allocator), ticket: ticket)
        }
    }

    private func encode(
        _ chunks: [NBDReplyChunk], for request: NBDRequest, extended: Bool, allocator: ByteBufferAllocator
    ) -> [ByteBuffer] {
        var buffer = allocator.buffer(capacity: chunks.reduce(0) { $0 + 32 + $1.payloadLength })
        for (index, chunk) in chunks.enumerated() {
            buffer.writeNBDReplyChunk(
                chunk,
                flags: index == chunks.count - 1 ? .done : [],
                cookie: request.cookie,
                requestOffset: request.offset,
                extendedHeaders: extended
            )
        }
        return [buffer]
    }
}
