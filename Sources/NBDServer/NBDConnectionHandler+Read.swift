import Logging
import NBDProtocol
import NIOCore

extension NBDConnectionHandler {
    /// Zeroes shared by every hole sent in a simple reply or folded into a DF data chunk; slices of it are
    /// free. 1 MiB keeps a 32 MiB hole to 32 slices.
    static let zeroes: ByteBuffer = {
        var buffer = ByteBufferAllocator().buffer(capacity: 1024 * 1024)
        buffer.writeRepeatingByte(0, count: 1024 * 1024)
        return buffer
    }()

    func read(_ request: NBDRequest, from export: any NBDExport, style: NBDReplyStyle, ticket: Ticket) {
        guard let context else { return finish(ticket) }
        // Hot data: answered right here, without a round trip through the export's threads.
        if let segments = export.readImmediately(offset: request.offset, length: UInt32(request.length)) {
            return sendRead(request, segments: segments, style: style, ticket: ticket)
        }
        let future = export.read(offset: request.offset, length: UInt32(request.length), eventLoop: context.eventLoop)
        whenExportCompletes(future) { result in
            switch result {
            case .success(let segments):
                self.sendRead(request, segments: segments, style: style, ticket: ticket)
            case .failure(let error):
                self.sendFailure(error, for: request, style: style, ticket: ticket)
            }
        }
    }

    /// The buffers of a successful READ reply; data buffers from the export are passed on, not copied.
    private func sendRead(_ request: NBDRequest, segments: [NBDReadSegment], style: NBDReplyStyle, ticket: Ticket) {
        guard let segments = NBDReadLayout.validated(segments, offset: request.offset, length: request.length) else {
            logger.error("NBD export returned read segments that do not tile the request")
            let rejection = NBDRequestRejection(.ioError, "internal error")
            return sendCompletion(rejection, for: request, style: style, ticket: ticket)
        }
        // The client may have gone while the export read: the read's answer has nowhere to go.
        guard let allocator = context?.channel.allocator else { return finish(ticket) }
        send(readReply(request, segments: segments, style: style, allocator: allocator), ticket: ticket)
    }

    private func readReply(
        _ request: NBDRequest, segments: [NBDReadSegment], style: NBDReplyStyle, allocator: ByteBufferAllocator
    ) -> [ByteBuffer] {
        var header = allocator.buffer(capacity: 32)
        guard style != .simple else {
            header.writeNBDSimpleReply(error: nil, cookie: request.cookie)
            return [header] + segments.flatMap(Self.bytes(of:))
        }
        let extended = style == .extended
        let chunks: [NBDReadSegment]
        if request.flags.contains(.dontFragment), segments.count > 1 {
            // DF: "the server MUST send at most one content chunk ... If the area being read contains both
            // data and a hole, the server MUST use NBD_REPLY_TYPE_OFFSET_DATA with the zeroes explicitly
            // present." Here (and only here) the data is copied.
            var data = allocator.buffer(capacity: Int(request.length))
            for segment in segments {
                for var piece in Self.bytes(of: segment) { data.writeBuffer(&piece) }
            }
            chunks = [.data(offset: request.offset, data: data)]
        } else {
            chunks = segments
        }
        var buffers: [ByteBuffer] = []
        for (index, segment) in chunks.enumerated() {
            // The final content chunk carries DONE: all data is in memory, so no error can follow it.
            let flags: NBDReplyFlags = index == chunks.count - 1 ? .done : []
            var chunkHeader = allocator.buffer(capacity: 40)
            switch segment {
            case .data(let offset, let data):
                chunkHeader.writeNBDReplyChunk(
                    .offsetData(offset: offset, dataLength: data.readableBytes),
                    flags: flags,
                    cookie: request.cookie,
                    requestOffset: request.offset,
                    extendedHeaders: extended
                )
                buffers.append(chunkHeader)
                buffers.append(data)
            case .hole(let offset, let length):
                chunkHeader.writeNBDReplyChunk(
                    .offsetHole(offset: offset, length: length),
                    flags: flags,
                    cookie: request.cookie,
                    requestOffset: request.offset,
                    extendedHeaders: extended
                )
                buffers.append(chunkHeader)
            }
        }
        return buffers
    }

    /// A segment as the bytes a simple reply or a DF chunk carries: data as is, holes as shared zeroes.
    static func bytes(of segment: NBDReadSegment) -> [ByteBuffer] {
        switch segment {
        case .data(_, let data):
            return [data]
        case .hole(_, let length):
            var remaining = Int(length)
            var pieces: [ByteBuffer] = []
            while remaining > 0 {
                let size = min(remaining, zeroes.readableBytes)
                pieces.append(zeroes.getSlice(at: zeroes.readerIndex, length: size)!)
                remaining -= size
            }
            return pieces
        }
    }
}

/// Checks what an export returned for a READ before any of it reaches the wire.
enum NBDReadLayout {
    /// The segments without empty ones, if they tile [offset, offset + length) in order; nil otherwise.
    /// proto.md forbids content chunks outside the request or overlapping each other, and requires
    /// the whole range to be covered on success, so a broken export must become an error, not a reply.
    static func validated(_ segments: [NBDReadSegment], offset: UInt64, length: UInt64) -> [NBDReadSegment]? {
        var position = offset
        var result: [NBDReadSegment] = []
        for segment in segments {
            let (start, size): (UInt64, UInt64) =
                switch segment {
                case .data(let offset, let data): (offset, UInt64(data.readableBytes))
                case .hole(let offset, let length): (offset, UInt64(length))
                }
            guard size > 0 else { continue }
            guard start == position else { return nil }
            position += size
            result.append(segment)
        }
        guard position == offset + length else { return nil }
        return result
    }
}
