import CairnTestSupport
import MirrorProtocol
import NIOCore
import Testing

@Suite("mirror frames")
struct FrameCodecTests {
    static func encoded(_ frame: MirrorFrame) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.writeMirrorFrame(frame)
        return buffer
    }

    @Test("a frame round-trips, byte by byte as well as whole")
    func roundTrip() throws {
        let data = ByteBuffer(bytes: (0..<5000).map { UInt8(truncatingIfNeeded: $0 * 7) })
        let frame = MirrorFrame(
            command: .write, flags: .fua, messageID: 0x0102_0304_0506_0708,
            payload: MirrorWriteHeader.payload(handle: 9, offset: 4096, data: data))
        var whole = Self.encoded(frame)
        #expect(whole.readableBytes == MirrorFrame.headerLength + 16 + 5000 + MirrorFrame.trailerLength)
        #expect(try MirrorFrameDecoder.next(from: &whole) == .frame(frame))
        #expect(whole.readableBytes == 0)

        // Fed one byte at a time: nothing until the last byte, nothing consumed meanwhile.
        let bytes = Self.encoded(frame)
        var stream = ByteBuffer()
        for index in 0..<bytes.readableBytes {
            stream.writeInteger(bytes.getInteger(at: index, as: UInt8.self)!)
            let result = try MirrorFrameDecoder.next(from: &stream)
            if index < bytes.readableBytes - 1 { #expect(result == nil) } else { #expect(result == .frame(frame)) }
        }
        let (header, payload) = try MirrorWriteHeader.split(frame.payload)
        #expect(header == MirrorWriteHeader(handle: 9, offset: 4096) && payload == data)
    }

    @Test("a write's data sent after its header without a copy is the same frame on the wire")
    func splitPayload() throws {
        let data = ByteBuffer(bytes: (0..<7000).map { UInt8(truncatingIfNeeded: $0 * 13) })
        let contiguous = MirrorFrame(
            command: .write, messageID: 77, payload: MirrorWriteHeader.payload(handle: 3, offset: 8192, data: data))
        let split = MirrorFrame(
            command: .write, messageID: 77, payload: MirrorWriteHeader.payload(handle: 3, offset: 8192, data: ByteBuffer()),
            data: data)
        #expect(split.payloadLength == contiguous.payload.readableBytes)
        #expect(split.payloadChecksum == contiguous.payloadChecksum)
        var wire = Self.encoded(split)
        #expect(wire == Self.encoded(contiguous))
        #expect(try MirrorFrameDecoder.next(from: &wire) == .frame(contiguous))
    }

    @Test("a damaged payload is reported with its message id; the next frame still decodes")
    func corruptedPayload() throws {
        let first = MirrorFrame(command: .write, messageID: 41, payload: ByteBuffer(bytes: [1, 2, 3, 4, 5]))
        let second = MirrorFrame(command: .flush, messageID: 42, payload: MirrorHandleValue(handle: 1).payload)
        var stream = Self.encoded(first)
        stream.setInteger(UInt8(0xEE), at: MirrorFrame.headerLength + 2)
        var next = Self.encoded(second)
        stream.writeBuffer(&next)
        #expect(try MirrorFrameDecoder.next(from: &stream) == .corrupted(command: .write, flags: [], messageID: 41))
        #expect(try MirrorFrameDecoder.next(from: &stream) == .frame(second))
    }

    @Test("a damaged header, bad magic or oversized length closes the stream")
    func badHeaders() {
        let frame = MirrorFrame(command: .status, messageID: 1)
        var damaged = Self.encoded(frame)
        damaged.setInteger(UInt64(2), at: 8)  // message id changed, header CRC not
        #expect(throws: MirrorFramingError.self) { try MirrorFrameDecoder.next(from: &damaged) }

        var magic = Self.encoded(frame)
        magic.setInteger(UInt32(0x4E42_4400), at: 0)
        #expect(throws: MirrorFramingError.self) { try MirrorFrameDecoder.next(from: &magic) }

        var big = Self.encoded(MirrorFrame(command: .write, messageID: 3, payload: ByteBuffer(bytes: [UInt8](repeating: 0, count: 100))))
        #expect(throws: MirrorFramingError.self) { try MirrorFrameDecoder.next(from: &big, maximumPayload: 99) }
    }

    @Test("messages round-trip; truncated and trailing bytes are refused")
    func messages() throws {
        let establish = MirrorEstablishRequest(
            volume: "vol-é", size: 1 << 30, chunkSize: 65536,
            generations: MirrorGenerations(pairID: 7, synced: 8, current: 9), requiredBytes: 12345,
            options: [.create, .initial])
        #expect(try MirrorEstablishRequest.decode(payload: establish.payload) == establish)
        let status = MirrorTargetStatus(
            availableBytes: 99,
            volumes: [.init(name: "a", size: 1, allocatedBytes: 0, role: "target", state: "mirrored", full: true, failed: false)])
        #expect(try MirrorTargetStatus.decode(payload: status.payload) == status)
        let reply = MirrorEstablishReply(handle: 4, created: true, fullSyncNeeded: false)
        #expect(try MirrorEstablishReply.decode(payload: reply.payload) == reply)
        let error = MirrorRemoteError(.sizeMismatch, "sizes differ")
        let errorFrame = MirrorFrame(command: .establish, messageID: 5).errorReply(error)
        #expect(errorFrame.remoteError() == error && errorFrame.isReply)

        var truncated = establish.payload
        truncated.moveWriterIndex(to: truncated.writerIndex - 1)
        #expect(throws: MirrorPayloadError.self) { try MirrorEstablishRequest.decode(payload: truncated) }
        var trailing = MirrorRange(handle: 1, offset: 2, length: 3).payload
        trailing.writeInteger(UInt8(0))
        #expect(throws: MirrorPayloadError.self) { try MirrorRange.decode(payload: trailing) }
    }

    /// Random bytes never crash the decoder: every outcome is a frame, a corruption report, "need more",
    /// or a framing error. Seeded; the seed is in the failure message.
    @Test("random garbage never crashes the decoder", arguments: [UInt64(1), 2, 3])
    func garbage(seed: UInt64) {
        var generator = SeededGenerator(seed: seed)
        for _ in 0..<200 {
            var frame = Self.encoded(
                MirrorFrame(command: .write, messageID: generator.next(), payload: ByteBuffer(bytes: [1, 2, 3])))
            let position = Int(generator.next() % UInt64(frame.readableBytes))
            frame.setInteger(UInt8(truncatingIfNeeded: generator.next()), at: position)
            _ = try? MirrorFrameDecoder.next(from: &frame)
        }
    }
}
