import NIOCore

/// Turns socket reads into mirror frames with at most one copy of any byte, and none for a frame that
/// arrives within one read.
///
/// NIO's `ByteToMessageHandler` cumulates reads by appending them to one growing buffer. Measured on
/// the target (bench/mirror.py write-1m-qd8, perf): that buffer was reallocated and copied as a 1 MiB
/// frame grew read by read, and once a frame's payload had been handed out as a slice (still held by
/// the disk write), the next append copied the whole shared storage again (copy-on-write), consumed
/// bytes included. Here a frame that is complete in the read is sliced out of it; a frame that spans
/// reads gets its own buffer of exactly its length as soon as its header has arrived (the header says
/// how long it is), and later reads are copied into that buffer once, up to the frame's end. Nothing
/// the assembler owns is ever shared, so no write into it copies.
///
/// Pure NIOCore and synchronous: tested by feeding buffers cut at random points.
public struct MirrorFrameAssembler: Sendable {
    public let maximumPayload: UInt32
    /// An incomplete frame: its first bytes while the header is incomplete, else a buffer with capacity
    /// for the whole frame.
    private var partial: ByteBuffer?
    /// Length of the frame in `partial` once its header has been read.
    private var partialTotal: Int?

    public init(maximumPayload: UInt32 = MirrorLimits.maximumPayload) {
        self.maximumPayload = maximumPayload
    }

    /// Bytes held for an incomplete frame.
    public var bufferedBytes: Int { partial?.readableBytes ?? 0 }

    /// Consumes `input`, calling `deliver` for every frame it completes, in order. Throws (having
    /// delivered the frames before the damage) when the stream cannot be read as frames any more.
    public mutating func feed(_ input: ByteBuffer, deliver: (MirrorInbound) -> Void) throws {
        var input = input
        while input.readableBytes > 0 {
            if var frame = partial.take() {
                guard let total = partialTotal else {
                    // Complete the header first: it says how large a buffer the frame needs.
                    var piece = input.readSlice(length: min(MirrorFrame.headerLength - frame.readableBytes, input.readableBytes))!
                    frame.writeBuffer(&piece)
                    guard let total = try MirrorFrameDecoder.frameLength(in: frame, maximumPayload: maximumPayload) else {
                        partial = frame
                        return
                    }
                    startFrame(from: &frame, total: total)
                    continue
                }
                var piece = input.readSlice(length: min(total - frame.readableBytes, input.readableBytes))!
                frame.writeBuffer(&piece)
                guard frame.readableBytes == total else {
                    partial = frame
                    return
                }
                partialTotal = nil
                deliver(try MirrorFrameDecoder.next(from: &frame, maximumPayload: maximumPayload)!)
                continue
            }
            // Frames wholly inside this read: slices of it, no copy.
            while let inbound = try MirrorFrameDecoder.next(from: &input, maximumPayload: maximumPayload) {
                deliver(inbound)
            }
            guard input.readableBytes > 0 else { return }
            if let total = try MirrorFrameDecoder.frameLength(in: input, maximumPayload: maximumPayload) {
                startFrame(from: &input, total: total)
            } else {
                var head = ByteBuffer()
                head.reserveCapacity(MirrorFrame.headerLength)
                head.writeBuffer(&input)
                partial = head
            }
        }
    }

    /// Moves the start of a `total`-byte frame (all of `bytes`' readable bytes, fewer than `total`) into a
    /// buffer of its own.
    private mutating func startFrame(from bytes: inout ByteBuffer, total: Int) {
        var frame = ByteBuffer()
        frame.reserveCapacity(total)
        frame.writeBuffer(&bytes)
        partial = frame
        partialTotal = total
    }
}

/// The channel handler around `MirrorFrameAssembler`, in place of `ByteToMessageHandler(MirrorFrameDecoder())`.
/// A framing error goes down the pipeline as an error (the handlers after it close the connection), and
/// nothing after it is read.
public final class MirrorFrameReader: ChannelInboundHandler {
    public typealias InboundIn = ByteBuffer
    public typealias InboundOut = MirrorInbound

    private var assembler: MirrorFrameAssembler
    private var failed = false

    public init(maximumPayload: UInt32 = MirrorLimits.maximumPayload) {
        assembler = MirrorFrameAssembler(maximumPayload: maximumPayload)
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !failed else { return }
        // Frames are passed on after the assembler is done with this read, so a handler reacting to one
        // can never re-enter it.
        var frames: [MirrorInbound] = []
        var failure: (any Error)?
        do {
            try assembler.feed(unwrapInboundIn(data)) { frames.append($0) }
        } catch {
            failed = true
            failure = error
        }
        for frame in frames { context.fireChannelRead(wrapInboundOut(frame)) }
        if let failure { context.fireErrorCaught(failure) }
    }
}
