import NIOCore

extension ByteBuffer {
    /// Writes a simple reply header (proto.md "Simple reply message"). For a successful READ the caller
    /// writes the data after it.
    @discardableResult
    public mutating func writeNBDSimpleReply(error: NBDWireError?, cookie: UInt64) -> Int {
        writeInteger(NBDMagic.simpleReply) + writeInteger(error?.rawValue ?? 0) + writeInteger(cookie)
    }

    /// Writes one structured (20-byte header) or extended (32-byte header) reply chunk.
    ///
    /// For `.offsetData` only the header and the 64-bit offset are written; the data follows separately.
    /// - Parameters:
    ///   - requestOffset: the request's offset, echoed by the extended header.
    @discardableResult
    public mutating func writeNBDReplyChunk(
        _ chunk: NBDReplyChunk,
        flags: NBDReplyFlags,
        cookie: UInt64,
        requestOffset: UInt64,
        extendedHeaders: Bool
    ) -> Int {
        let start = writerIndex
        let payloadLength = chunk.payloadLength
        if extendedHeaders {
            writeInteger(NBDMagic.extendedReply)
            writeInteger(flags.rawValue)
            writeInteger(chunk.type.rawValue)
            writeInteger(cookie)
            writeInteger(requestOffset)
            writeInteger(UInt64(payloadLength))
        } else {
            writeInteger(NBDMagic.structuredReply)
            writeInteger(flags.rawValue)
            writeInteger(chunk.type.rawValue)
            writeInteger(cookie)
            writeInteger(UInt32(payloadLength))
        }
        writeNBDChunkPayload(chunk)
        return writerIndex - start
    }

    private mutating func writeNBDChunkPayload(_ chunk: NBDReplyChunk) {
        switch chunk {
        case .none:
            break
        case .offsetData(let offset, _):
            writeInteger(offset)
        case .offsetHole(let offset, let length):
            writeInteger(offset)
            writeInteger(length)
        case .blockStatus(let contextID, let descriptors):
            writeInteger(contextID)
            for descriptor in descriptors {
                precondition(descriptor.length <= UInt32.max, "compact block status extent over 32 bits")
                writeInteger(UInt32(descriptor.length))
                writeInteger(descriptor.flags)
            }
        case .blockStatusExtended(let contextID, let descriptors):
            writeInteger(contextID)
            // The spec lets the count be 0 ("determined by length"); filling it in helps clients.
            writeInteger(UInt32(descriptors.count))
            for descriptor in descriptors {
                writeInteger(descriptor.length)
                writeInteger(UInt32(0))  // padding, MUST be zero
                writeInteger(descriptor.flags)
            }
        case .error(let error, let message):
            writeNBDErrorPrefix(error, message: message)
        case .errorOffset(let error, let message, let offset):
            writeNBDErrorPrefix(error, message: message)
            writeInteger(offset)
        }
    }

    private mutating func writeNBDErrorPrefix(_ error: NBDWireError, message: String) {
        let text = message.truncatedToNBDStringLimit
        writeInteger(error.rawValue)
        writeInteger(UInt16(text.utf8.count))
        writeString(text)
    }
}

extension NBDReplyChunk {
    /// The chunk's *length* field: payload bytes after the header (including data for OFFSET_DATA).
    public var payloadLength: Int {
        switch self {
        case .none: 0
        case .offsetData(_, let dataLength): 8 + dataLength
        case .offsetHole: 12
        case .blockStatus(_, let descriptors): 4 + 8 * descriptors.count
        case .blockStatusExtended(_, let descriptors): 8 + 16 * descriptors.count
        case .error(_, let message): 6 + message.truncatedToNBDStringLimit.utf8.count
        case .errorOffset(_, let message, _): 14 + message.truncatedToNBDStringLimit.utf8.count
        }
    }
}
