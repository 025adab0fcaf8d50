import CairnTestSupport
import MirrorProtocol
import NIOCore
import NIOEmbedded
import Testing

@Suite("mirror frame assembler")
struct FrameAssemblerTests {
    /// A stream of random frames (some with damaged payloads) cut into reads at random points, tiny ones
    /// included, must give exactly what the reference decoder gives on the whole stream. The frames are all
    /// held to the end, so a payload overwritten by a later read would show.
    @Test("random frames cut at random points decode as the whole stream does", arguments: [UInt64(11), 12, 13])
    func randomCuts(seed: UInt64) throws {
        var generator = SeededGenerator(seed: seed)
        var stream = ByteBuffer()
        for index in 0..<60 {
            let size: Int
            switch generator.next() % 4 {
            case 0: size = 0
            case 1: size = Int(generator.next() % 64)
            case 2: size = Int(generator.next() % 9000)
            default: size = Int(generator.next() % 300_000)
            }
            let payload = ByteBuffer(bytes: (0..<size).map { _ in UInt8(truncatingIfNeeded: generator.next()) })
            var encoded = ByteBuffer()
            encoded.writeMirrorFrame(MirrorFrame(command: .write, messageID: UInt64(index), payload: payload))
            if size > 0, generator.next() % 8 == 0 {  // damaged in transit
                let at = MirrorFrame.headerLength + Int(generator.next() % UInt64(size))
                encoded.setInteger(encoded.getInteger(at: at, as: UInt8.self)! ^ 0x40, at: at)
            }
            stream.writeBuffer(&encoded)
        }
        var whole = stream
        var expected: [MirrorInbound] = []
        while let inbound = try MirrorFrameDecoder.next(from: &whole) { expected.append(inbound) }
        #expect(whole.readableBytes == 0)

        var assembler = MirrorFrameAssembler()
        var delivered: [MirrorInbound] = []
        var rest = stream
        while rest.readableBytes > 0 {
            let cut = generator.next() % 3 == 0 ? 1 + Int(generator.next() % 40) : 1 + Int(generator.next() % 400_000)
            // Each read in a buffer of its own, as a socket delivers them.
            var read = ByteBuffer()
            read.writeImmutableBuffer(rest.readSlice(length: min(cut, rest.readableBytes))!)
            try assembler.feed(read) { delivered.append($0) }
        }
        #expect(delivered == expected, "seed \(seed)")
        #expect(assembler.bufferedBytes == 0, "seed \(seed)")
    }

    @Test("frames before a damaged header are delivered, then it throws; an oversized header is refused unbuffered")
    func badHeader() throws {
        let good = MirrorFrame(command: .flush, messageID: 1, payload: ByteBuffer(bytes: [9, 9]))
        var stream = ByteBuffer()
        stream.writeMirrorFrame(good)
        var bad = ByteBuffer()
        bad.writeMirrorFrame(MirrorFrame(command: .status, messageID: 2))
        bad.setInteger(UInt64(3), at: 8)  // message id changed, header CRC not
        stream.writeBuffer(&bad)
        var assembler = MirrorFrameAssembler()
        var delivered: [MirrorInbound] = []
        // The damaged header arrives split over two reads.
        let first = stream.readSlice(length: stream.readableBytes - 10)!
        try assembler.feed(first) { delivered.append($0) }
        #expect(delivered == [.frame(good)])
        #expect(throws: MirrorFramingError.self) { try assembler.feed(stream) { delivered.append($0) } }

        var big = ByteBuffer()
        big.writeMirrorFrame(MirrorFrame(command: .write, messageID: 4, payload: ByteBuffer(bytes: [UInt8](repeating: 0, count: 100))))
        var small = MirrorFrameAssembler(maximumPayload: 99)
        #expect(throws: MirrorFramingError.self) {
            try small.feed(big.getSlice(at: 0, length: MirrorFrame.headerLength + 1)!) { _ in }
        }
        #expect(small.bufferedBytes == 0)
    }

    @Test("the channel handler passes frames on and a framing error down the pipeline")
    func handler() throws {
        let channel = EmbeddedChannel(handler: MirrorFrameReader())
        let frame = MirrorFrame(command: .write, messageID: 5, payload: ByteBuffer(bytes: [1, 2, 3]))
        var wire = ByteBuffer()
        wire.writeMirrorFrame(frame)
        try channel.writeInbound(wire.getSlice(at: 0, length: 7)!)
        #expect(try channel.readInbound(as: MirrorInbound.self) == nil)
        try channel.writeInbound(wire.getSlice(at: 7, length: wire.readableBytes - 7)!)
        #expect(try channel.readInbound(as: MirrorInbound.self) == .frame(frame))
        var garbage = ByteBuffer()
        garbage.writeInteger(UInt64(0xDEAD_BEEF), as: UInt64.self)
        garbage.writeRepeatingByte(0, count: 30)
        #expect(throws: MirrorFramingError.self) { try channel.writeInbound(garbage) }
        _ = try? channel.finish()
    }
}
