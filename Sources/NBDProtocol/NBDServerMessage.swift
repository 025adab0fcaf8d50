import NIOCore

/// What `NBDServerFrameParser` yields, in the order the protocol phases allow.
public enum NBDServerMessage: Sendable {
    /// The newstyle greeting and the server's handshake flags.
    case greeting(NBDHandshakeFlags)
    /// One option reply; decode `data` with `NBDOptionReply.decoded(type:data:)`.
    case optionReply(option: NBDOptionCode, type: NBDOptionReplyType, data: ByteBuffer)
    /// A simple reply (never followed by data: see `NBDServerFrameParser`).
    case simpleReply(cookie: UInt64, error: NBDWireError?)
    /// One structured reply chunk.
    case chunk(NBDReceivedChunk)
}

/// One structured reply chunk as received; `content()` checks its payload against its type.
public struct NBDReceivedChunk: Sendable {
    public var flags: NBDReplyFlags
    public var type: NBDReplyType
    public var cookie: UInt64
    /// The payload, a slice of the receive buffer.
    public var payload: ByteBuffer

    public init(flags: NBDReplyFlags, type: NBDReplyType, cookie: UInt64, payload: ByteBuffer) {
        self.flags = flags
        self.type = type
        self.cookie = cookie
        self.payload = payload
    }

    /// NBD_REPLY_FLAG_DONE: the last chunk of its reply.
    public var isFinal: Bool { flags.contains(.done) }

    /// The typed payload. Throws for what proto.md ("Structured reply types") says a client "MUST
    /// initiate a hard disconnect" over: an unknown type without bit 15, or a payload that does not fit
    /// its type. An unknown *error* type is an error like any other ("MUST consider the current reply as
    /// errored").
    public func content() throws(NBDProtocolError) -> NBDReplyContent {
        var bytes = payload
        switch type {
        case .none:
            guard bytes.readableBytes == 0, isFinal else {
                throw malformed("NONE chunk with a payload or without DONE")
            }
            return .none
        case .offsetData:
            guard bytes.readableBytes >= 9 else { throw malformed("OFFSET_DATA chunk shorter than 9 bytes") }
            let offset = bytes.readInteger(as: UInt64.self)!
            return .data(offset: offset, data: bytes)
        case .offsetHole:
            guard bytes.readableBytes == 12 else { throw malformed("OFFSET_HOLE chunk is not 12 bytes") }
            let offset = bytes.readInteger(as: UInt64.self)!
            let length = bytes.readInteger(as: UInt32.self)!
            guard length > 0 else { throw malformed("OFFSET_HOLE of zero bytes") }
            return .hole(offset: offset, length: length)
        case .blockStatus:
            guard bytes.readableBytes >= 12, (bytes.readableBytes - 4) % 8 == 0 else {
                throw malformed("BLOCK_STATUS chunk of \(bytes.readableBytes) bytes")
            }
            let contextID = bytes.readInteger(as: UInt32.self)!
            var descriptors: [NBDBlockDescriptor] = []
            descriptors.reserveCapacity(bytes.readableBytes / 8)
            while let length = bytes.readInteger(as: UInt32.self), let flags = bytes.readInteger(as: UInt32.self) {
                guard length > 0 else { throw malformed("block status descriptor of zero length") }
                descriptors.append(NBDBlockDescriptor(length: UInt64(length), flags: flags))
            }
            return .blockStatus(contextID: contextID, descriptors: descriptors)
        default:
            guard type.isError else { throw malformed("unknown reply chunk type \(type.rawValue)") }
            return try errorContent(&bytes)
        }
    }

    /// error (32), message length (16), message; then for ERROR_OFFSET an offset (64).
    private func errorContent(_ bytes: inout ByteBuffer) throws(NBDProtocolError) -> NBDReplyContent {
        guard let code = bytes.readInteger(as: UInt32.self), let length = bytes.readInteger(as: UInt16.self),
            let text = bytes.readBytes(length: Int(length))
        else { throw malformed("error chunk message does not fit its chunk") }
        // "The client SHOULD treat an unexpected error value as if it had been NBD_EINVAL"; zero is not
        // an error value at all.
        let error = code == 0 ? NBDWireError.invalid : NBDWireError(rawValue: code)
        // The message is for people: shown as received, invalid UTF-8 repaired rather than refused.
        let message = String(decoding: text, as: UTF8.self)
        if type == .errorOffset {
            guard bytes.readableBytes == 8 else { throw malformed("ERROR_OFFSET chunk without its offset") }
            return .error(error, message: message, offset: bytes.readInteger(as: UInt64.self)!)
        }
        return .error(error, message: message, offset: nil)
    }

    private func malformed(_ reason: String) -> NBDProtocolError {
        NBDProtocolError(.malformedReply, reason)
    }
}

/// The payload of a reply chunk, typed.
public enum NBDReplyContent: Sendable, Hashable {
    /// `NBD_REPLY_TYPE_NONE`.
    case none
    /// `NBD_REPLY_TYPE_OFFSET_DATA`: data read at `offset` (a slice of the receive buffer).
    case data(offset: UInt64, data: ByteBuffer)
    /// `NBD_REPLY_TYPE_OFFSET_HOLE`: `length` bytes at `offset` read as zeroes.
    case hole(offset: UInt64, length: UInt32)
    /// `NBD_REPLY_TYPE_BLOCK_STATUS`: extents of one context.
    case blockStatus(contextID: UInt32, descriptors: [NBDBlockDescriptor])
    /// `NBD_REPLY_TYPE_ERROR`, `NBD_REPLY_TYPE_ERROR_OFFSET` (with `offset`) or an unknown error type.
    case error(NBDWireError, message: String, offset: UInt64?)
}
