import NIOCore

/// What the frame decoder delivers: a frame whose checksums hold, or the header of one whose payload
/// was damaged in transit (so the receiver can answer "send it again" for exactly that message id).
public enum MirrorInbound: Sendable, Equatable {
    case frame(MirrorFrame)
    case corrupted(command: MirrorCommand, flags: MirrorFrameFlags, messageID: UInt64)
}

/// Why a byte stream cannot be read as mirror frames any more. The connection must close: no later
/// frame boundary can be trusted.
public struct MirrorFramingError: Error, Sendable, Equatable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// Splits a byte stream into mirror frames and checks both checksums. Pure NIOCore: tested by feeding
/// bytes, without sockets.
public struct MirrorFrameDecoder: ByteToMessageDecoder, Sendable {
    public typealias InboundOut = MirrorInbound

    /// Payloads above this are refused before any of them is buffered.
    public let maximumPayload: UInt32

    public init(maximumPayload: UInt32 = MirrorLimits.maximumPayload) {
        self.maximumPayload = maximumPayload
    }

    public mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let inbound = try Self.next(from: &buffer, maximumPayload: maximumPayload) else { return .needMoreData }
        context.fireChannelRead(wrapInboundOut(inbound))
        return .continue
    }

    public mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws
        -> DecodingState
    {
        try decode(context: context, buffer: &buffer)
    }

    /// The next frame in `buffer`, consuming it; nil (consuming nothing) if the frame is not complete yet.
    public static func next(from buffer: inout ByteBuffer, maximumPayload: UInt32 = MirrorLimits.maximumPayload)
        throws -> MirrorInbound?
    {
        guard let total = try frameLength(in: buffer, maximumPayload: maximumPayload),
            buffer.readableBytes >= total
        else { return nil }
        let start = buffer.readerIndex
        let command = MirrorCommand(rawValue: buffer.getInteger(at: start + 4, as: UInt16.self)!)
        let flags = MirrorFrameFlags(rawValue: buffer.getInteger(at: start + 6, as: UInt16.self)!)
        let messageID = buffer.getInteger(at: start + 8, as: UInt64.self)!
        buffer.moveReaderIndex(forwardBy: MirrorFrame.headerLength)
        let payload = buffer.readSlice(length: total - MirrorFrame.headerLength - MirrorFrame.trailerLength)!
        let payloadCRC = buffer.readInteger(as: UInt32.self)!
        guard payload.withUnsafeReadableBytes({ CRC32C.checksum($0) }) == payloadCRC else {
            return .corrupted(command: command, flags: flags, messageID: messageID)
        }
        return .frame(MirrorFrame(command: command, flags: flags, messageID: messageID, payload: payload))
    }

    /// Bytes of the whole frame (header, payload, trailer) starting at `buffer`'s reader index, once its
    /// header has arrived and checks out; nil while the header is incomplete. Consumes nothing.
    public static func frameLength(in buffer: ByteBuffer, maximumPayload: UInt32 = MirrorLimits.maximumPayload)
        throws -> Int?
    {
        guard buffer.readableBytes >= MirrorFrame.headerLength else { return nil }
        let start = buffer.readerIndex
        let magic = buffer.getInteger(at: start, as: UInt32.self)!
        let length = buffer.getInteger(at: start + 16, as: UInt32.self)!
        let headerCRC = buffer.getInteger(at: start + 20, as: UInt32.self)!
        guard magic == MirrorFrame.magic else {
            throw MirrorFramingError("not a mirror frame (bad magic 0x\(String(magic, radix: 16)))")
        }
        let computed = buffer.withUnsafeReadableBytes { CRC32C.checksum(UnsafeRawBufferPointer(rebasing: $0[0..<20])) }
        guard computed == headerCRC else { throw MirrorFramingError("frame header checksum mismatch") }
        guard length <= maximumPayload else {
            throw MirrorFramingError("frame payload of \(length) bytes exceeds the limit of \(maximumPayload)")
        }
        return MirrorFrame.headerLength + Int(length) + MirrorFrame.trailerLength
    }
}

/// Writes outbound frames with their checksums as separate buffers (header with a small payload, data,
/// trailer), so a data payload is checksummed in place and handed to the socket's gathering write
/// without a copy.
public final class MirrorFrameWriter: ChannelOutboundHandler, Sendable {
    public typealias OutboundIn = MirrorFrame
    public typealias OutboundOut = ByteBuffer
    public init() {}

    /// A payload up to this size (a write's 16-byte header, replies, control messages) is copied after the
    /// frame header instead of going to the socket as a buffer of its own: one iovec less per frame.
    static let inlinePayload = 256

    public func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let frame = unwrapOutboundIn(data)
        let small = frame.payload.readableBytes <= Self.inlinePayload
        var header = context.channel.allocator.buffer(
            capacity: MirrorFrame.headerLength + (small ? frame.payload.readableBytes : 0))
        header.writeMirrorFrameHeader(frame)
        if small { header.writeImmutableBuffer(frame.payload) }
        var trailer = context.channel.allocator.buffer(capacity: MirrorFrame.trailerLength)
        trailer.writeInteger(frame.payloadChecksum)
        context.write(wrapOutboundOut(header), promise: nil)
        if !small { context.write(wrapOutboundOut(frame.payload), promise: nil) }
        if let data = frame.data, data.readableBytes > 0 { context.write(wrapOutboundOut(data), promise: nil) }
        context.write(wrapOutboundOut(trailer), promise: promise)
    }
}
