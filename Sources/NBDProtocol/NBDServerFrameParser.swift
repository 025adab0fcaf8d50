import NIOCore

/// The client side's `NBDFrameParser`: splits what a server sends into the greeting, option replies and
/// transmission replies. Pure: feed bytes with `append(_:)`, pull messages with `next()` until it
/// returns nil, and call `enterTransmission()` once NBD_OPT_GO has been acknowledged.
///
/// Replies are framed without knowing the requests they answer, which is what structured replies are
/// for (proto.md "Structured reply chunk message"): a simple reply is taken to have no payload, so a
/// client must negotiate structured replies before it reads. Extended headers are not parsed.
public struct NBDServerFrameParser: Sendable {
    /// Which kind of frame comes next.
    public enum Phase: Sendable, Hashable {
        /// `NBDMAGIC`, `IHAVEOPT`, 16 handshake flags.
        case greeting
        /// Option replies (fixed newstyle).
        case optionReplies
        /// Simple replies and structured reply chunks.
        case transmission
        /// Nothing more may arrive.
        case closed
    }

    /// Sizes of fixed frame parts, from proto.md's message layouts.
    enum FrameSize {
        /// NBDMAGIC (64) + IHAVEOPT (64) + handshake flags (16).
        static let greeting = 18
        /// magic64 + option32 + type32 + length32.
        static let optionReplyHeader = 20
        /// magic32 + error32 + cookie64.
        static let simpleReply = 16
        /// magic32 + flags16 + type16 + cookie64 + length32.
        static let structuredReplyHeader = 20
    }

    /// `cliserv_magic`: an oldstyle server, which this client does not speak (proto.md "Oldstyle
    /// negotiation"; the reference server dropped it in 3.10).
    static let oldstyleMagic: UInt64 = 0x0042_0281_8612_53

    public private(set) var phase: Phase = .greeting
    var buffer: ByteBuffer?
    let maximumOptionReplyLength: Int
    let maximumChunkPayload: Int

    /// - Parameters:
    ///   - maximumOptionReplyLength: largest option reply data accepted (the same bound the server puts
    ///     on option data).
    ///   - maximumChunkPayload: largest chunk payload accepted: a maximum-size OFFSET_DATA chunk (8-byte
    ///     offset + the payload limit) by default, which is also more than 2^20 block status descriptors.
    public init(
        maximumOptionReplyLength: Int = NBDLimits.maximumOptionDataLength,
        maximumChunkPayload: Int = 8 + NBDLimits.maximumPayload
    ) {
        self.maximumOptionReplyLength = maximumOptionReplyLength
        self.maximumChunkPayload = maximumChunkPayload
    }

    /// Bytes received but not yet turned into messages.
    public var bufferedBytes: Int { buffer?.readableBytes ?? 0 }

    /// Adds received bytes. An empty cumulation buffer adopts `bytes` without copying; consumed bytes are
    /// dropped once they outweigh the unread ones, so the buffer does not grow without bound.
    public mutating func append(_ bytes: ByteBuffer) {
        guard bytes.readableBytes > 0 else { return }
        guard var current = buffer.take(), current.readableBytes > 0 else {
            buffer = bytes
            return
        }
        if current.readerIndex > 0, current.readerIndex >= current.readableBytes { current.discardReadBytes() }
        current.writeImmutableBuffer(bytes)
        buffer = current
    }

    /// Switches to transmission replies after the final NBD_REP_ACK of NBD_OPT_GO.
    public mutating func enterTransmission() {
        phase = .transmission
    }

    /// Stops parsing: any later byte is a protocol violation.
    public mutating func close() {
        phase = .closed
    }

    /// The next complete message, or nil if more bytes are needed.
    public mutating func next() throws(NBDProtocolError) -> NBDServerMessage? {
        switch phase {
        case .greeting:
            return try nextGreeting()
        case .optionReplies:
            return try nextOptionReply()
        case .transmission:
            return try nextReply()
        case .closed:
            if bufferedBytes > 0 {
                throw NBDProtocolError(.unexpectedData, "\(bufferedBytes) bytes after the session ended")
            }
            return nil
        }
    }

    private mutating func nextGreeting() throws(NBDProtocolError) -> NBDServerMessage? {
        guard var bytes = buffer, bytes.readableBytes >= FrameSize.greeting else { return nil }
        let password = bytes.readInteger(as: UInt64.self)!
        let magic = bytes.readInteger(as: UInt64.self)!
        guard password == NBDMagic.initPassword else {
            throw NBDProtocolError(.badReplyMagic, "the server did not start with NBDMAGIC")
        }
        guard magic == NBDMagic.option else {
            let what = magic == Self.oldstyleMagic ? "oldstyle negotiation" : "magic 0x\(String(magic, radix: 16))"
            throw NBDProtocolError(.badReplyMagic, "the server speaks \(what), not newstyle")
        }
        let flags = NBDHandshakeFlags(rawValue: bytes.readInteger(as: UInt16.self)!)
        buffer = bytes
        phase = .optionReplies
        return .greeting(flags)
    }

    private mutating func nextOptionReply() throws(NBDProtocolError) -> NBDServerMessage? {
        guard var bytes = buffer, bytes.readableBytes >= FrameSize.optionReplyHeader else { return nil }
        let start = bytes.readerIndex
        guard bytes.getInteger(at: start, as: UInt64.self)! == NBDMagic.optionReply else {
            throw NBDProtocolError(.badReplyMagic, "option reply without its magic")
        }
        let option = NBDOptionCode(rawValue: bytes.getInteger(at: start + 8, as: UInt32.self)!)
        let type = NBDOptionReplyType(rawValue: bytes.getInteger(at: start + 12, as: UInt32.self)!)
        let length = Int(bytes.getInteger(at: start + 16, as: UInt32.self)!)
        guard length <= maximumOptionReplyLength else {
            throw NBDProtocolError(.replyTooLarge, "\(type) reply to \(option) carries \(length) bytes")
        }
        guard bytes.readableBytes >= FrameSize.optionReplyHeader + length else { return nil }
        bytes.moveReaderIndex(forwardBy: FrameSize.optionReplyHeader)
        let data = bytes.readSlice(length: length)!
        buffer = bytes
        return .optionReply(option: option, type: type, data: data)
    }

    private mutating func nextReply() throws(NBDProtocolError) -> NBDServerMessage? {
        guard var bytes = buffer, let magic = bytes.getInteger(at: bytes.readerIndex, as: UInt32.self) else {
            return nil
        }
        switch magic {
        case NBDMagic.simpleReply:
            guard bytes.readableBytes >= FrameSize.simpleReply else { return nil }
            bytes.moveReaderIndex(forwardBy: 4)
            let error = bytes.readInteger(as: UInt32.self)!
            let cookie = bytes.readInteger(as: UInt64.self)!
            buffer = bytes
            return .simpleReply(cookie: cookie, error: error == 0 ? nil : NBDWireError(rawValue: error))
        case NBDMagic.structuredReply:
            guard bytes.readableBytes >= FrameSize.structuredReplyHeader else { return nil }
            let start = bytes.readerIndex
            let length = Int(bytes.getInteger(at: start + 16, as: UInt32.self)!)
            guard length <= maximumChunkPayload else {
                throw NBDProtocolError(.replyTooLarge, "reply chunk of \(length) bytes")
            }
            guard bytes.readableBytes >= FrameSize.structuredReplyHeader + length else { return nil }
            bytes.moveReaderIndex(forwardBy: 4)
            let flags = NBDReplyFlags(rawValue: bytes.readInteger(as: UInt16.self)!)
            let type = NBDReplyType(rawValue: bytes.readInteger(as: UInt16.self)!)
            let cookie = bytes.readInteger(as: UInt64.self)!
            bytes.moveReaderIndex(forwardBy: 4)
            let payload = bytes.readSlice(length: length)!
            buffer = bytes
            return .chunk(NBDReceivedChunk(flags: flags, type: type, cookie: cookie, payload: payload))
        default:
            throw NBDProtocolError(.badReplyMagic, "reply magic 0x\(String(magic, radix: 16))")
        }
    }
}
