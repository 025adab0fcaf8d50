import NBDProtocol
import NIOCore
import Testing

/// The client side's encoders and `NBDServerFrameParser`, checked against the server side's parser and
/// encoders: whatever one side writes, the other must read back unchanged.
@Suite("client codecs")
struct ClientCodecTests {
    /// Feeds `bytes` one byte at a time and collects every message.
    func serverMessages(_ bytes: ByteBuffer, parser: inout NBDServerFrameParser) throws -> [NBDServerMessage] {
        var messages: [NBDServerMessage] = []
        for byte in bytes.readableBytesView {
            parser.append(ByteBuffer(bytes: [byte]))
            while let message = try parser.next() { messages.append(message) }
        }
        return messages
    }

    @Test("every option the client can send parses back to itself on the server side")
    func optionsRoundTrip() throws {
        let options: [NBDOption] = [
            .exportName("disk"), .abort, .list, .startTLS, .structuredReply, .extendedHeaders,
            .info(NBDInfoRequest(exportName: "a", requests: [.blockSize, .name])),
            .go(NBDInfoRequest(exportName: "", requests: [])),
            .listMetaContext(NBDMetaContextRequest(exportName: "d", queries: [])),
            .setMetaContext(
                NBDMetaContextRequest(exportName: "d", queries: ["base:allocation", "x-cairn:copy-on-write"])),
        ]
        var stream = ByteBuffer()
        stream.writeNBDClientFlags([.fixedNewstyle, .noZeroes])
        for option in options { stream.writeNBDOption(option) }
        var parser = NBDFrameParser()
        let messages = try parser.feedBytewise(stream)
        guard case .clientFlags(let flags) = messages.first else {
            Issue.record("no client flags")
            return
        }
        #expect(flags == [.fixedNewstyle, .noZeroes])
        #expect(messages.dropFirst().compactMap { if case .option(let o) = $0 { o } else { nil } } == options)
    }

    @Test("request headers: golden bytes, and they parse back with their payload")
    func requestHeaders() throws {
        var header = ByteBuffer()
        header.writeNBDRequestHeader(type: .write, flags: .fua, cookie: 0x0102, offset: 0x1000, length: 4)
        #expect(
            Array(header.readableBytesView)
                == Array(Wire.request(.write, flags: .fua, cookie: 0x0102, offset: 0x1000, length: 4).readableBytesView)
        )
        header.writeBytes([9, 9, 9, 9])
        var parser = NBDFrameParser()
        _ = try parser.feed(ByteBuffer(bytes: [0, 0, 0, 1]))
        parser.enterTransmission(extendedHeaders: false)
        guard case .request(let request) = try parser.feed(header).first else {
            Issue.record("no request")
            return
        }
        #expect(request.type == .write && request.cookie == 0x0102 && request.payload.bufferedBytes == 4)
    }

    @Test("greeting and option replies as the server writes them decode to the same values")
    func handshakeReplies() throws {
        let sizes = NBDBlockSizeConstraints(minimum: 512, preferred: 4096, maximumPayload: 1 << 25)
        let replies: [(NBDOptionCode, NBDOptionReply)] = [
            (.structuredReply, .ack),
            (.list, .server(name: "disk", description: "main")),
            (.list, .server(name: "bare", description: nil)),
            (.setMetaContext, .metaContext(id: 7, name: "x-cairn:copy-on-write")),
            (.go, .info(.export(size: 1 << 30, flags: [.hasFlags, .sendFlush]))),
            (.go, .info(.name("disk"))),
            (.go, .info(.description("d"))),
            (.go, .info(.blockSize(sizes))),
            (.go, .error(.errorUnknown, message: "no such export")),
            (.info, .error(.errorUnsupported, message: nil)),
        ]
        var stream = ByteBuffer()
        stream.writeNBDGreeting(flags: [.fixedNewstyle, .noZeroes])
        for (option, reply) in replies { stream.writeNBDOptionReply(reply, option: option) }
        var parser = NBDServerFrameParser()
        let messages = try serverMessages(stream, parser: &parser)
        guard case .greeting(let flags) = messages.first else {
            Issue.record("no greeting")
            return
        }
        #expect(flags == [.fixedNewstyle, .noZeroes])
        #expect(messages.count == replies.count + 1)
        for (message, (option, reply)) in zip(messages.dropFirst(), replies) {
            guard case .optionReply(let code, let type, let data) = message else {
                Issue.record("\(message)")
                return
            }
            #expect(code == option && type == reply.type)
            #expect(try NBDOptionReply.decoded(type: type, data: data) == reply)
        }
    }

    @Test("unknown INFO types are ignored; unknown reply types and bad lengths are protocol errors")
    func optionReplyErrors() throws {
        var unknownInfo = ByteBuffer()
        unknownInfo.writeInteger(UInt16(99))
        unknownInfo.writeString("future")
        #expect(try NBDOptionReply.decoded(type: .info, data: unknownInfo) == nil)
        var shortExport = ByteBuffer()
        shortExport.writeInteger(NBDInfoType.export.rawValue)
        shortExport.writeInteger(UInt32(1))
        #expect(throws: NBDProtocolError.self) { try NBDOptionReply.decoded(type: .info, data: shortExport) }
        #expect(throws: NBDProtocolError.self) {
            try NBDOptionReply.decoded(type: NBDOptionReplyType(rawValue: 77), data: ByteBuffer())
        }
        #expect(throws: NBDProtocolError.self) { try NBDOptionReply.decoded(type: .ack, data: ByteBuffer(bytes: [1])) }
    }

    @Test("the greeting of an oldstyle server, and garbage, are refused")
    func greetings() {
        var oldstyle = ByteBuffer()
        oldstyle.writeInteger(NBDMagic.initPassword)
        oldstyle.writeInteger(UInt64(0x0042_0281_8612_53))
        oldstyle.writeInteger(UInt16(0))
        var parser = NBDServerFrameParser()
        parser.append(oldstyle)
        #expect { try parser.next() } throws: { ($0 as? NBDProtocolError)?.code == .badReplyMagic }
        var garbage = NBDServerFrameParser()
        garbage.append(ByteBuffer(string: "HTTP/1.1 400 Bad Request\r\n\r\n"))
        #expect { try garbage.next() } throws: { ($0 as? NBDProtocolError)?.code == .badReplyMagic }
    }

    func transmissionParser() -> NBDServerFrameParser {
        var parser = NBDServerFrameParser()
        parser.enterTransmission()
        return parser
    }

    @Test("replies as the server writes them: simple, NONE, data, hole, block status, errors")
    func replies() throws {
        var stream = ByteBuffer()
        stream.writeNBDSimpleReply(error: nil, cookie: 1)
        stream.writeNBDSimpleReply(error: .invalid, cookie: 2)
        stream.writeNBDReplyChunk(
            .offsetData(offset: 4096, dataLength: 3), flags: [], cookie: 3, requestOffset: 0, extendedHeaders: false)
        stream.writeBytes([7, 8, 9])
        stream.writeNBDReplyChunk(
            .offsetHole(offset: 4099, length: 509), flags: .done, cookie: 3, requestOffset: 0, extendedHeaders: false)
        let descriptors = [NBDBlockDescriptor(length: 65536, flags: 1), NBDBlockDescriptor(length: 512, flags: 0)]
        stream.writeNBDReplyChunk(
            .blockStatus(contextID: 2, descriptors: descriptors), flags: .done, cookie: 4, requestOffset: 0,
            extendedHeaders: false)
        stream.writeNBDReplyChunk(
            .error(.permissionDenied, message: "read-only"), flags: .done, cookie: 5, requestOffset: 0,
            extendedHeaders: false)
        stream.writeNBDReplyChunk(
            .errorOffset(.ioError, message: "", offset: 512), flags: [], cookie: 6, requestOffset: 0,
            extendedHeaders: false)
        stream.writeNBDReplyChunk(.none, flags: .done, cookie: 6, requestOffset: 0, extendedHeaders: false)
        var parser = transmissionParser()
        let messages = try serverMessages(stream, parser: &parser)
        #expect(messages.count == 8)
        guard case .simpleReply(let firstCookie, let firstError) = messages[0],
            case .simpleReply(let secondCookie, let secondError) = messages[1]
        else {
            Issue.record("simple replies: \(messages.prefix(2))")
            return
        }
        #expect(firstCookie == 1 && firstError == nil && secondCookie == 2 && secondError == .invalid)
        let chunks = messages.dropFirst(2).compactMap { if case .chunk(let c) = $0 { c } else { nil } }
        #expect(chunks.map(\.cookie) == [3, 3, 4, 5, 6, 6])
        #expect(chunks.map(\.isFinal) == [false, true, true, true, false, true])
        #expect(try chunks[0].content() == .data(offset: 4096, data: ByteBuffer(bytes: [7, 8, 9])))
        #expect(try chunks[1].content() == .hole(offset: 4099, length: 509))
        #expect(try chunks[2].content() == .blockStatus(contextID: 2, descriptors: descriptors))
        #expect(try chunks[3].content() == .error(.permissionDenied, message: "read-only", offset: nil))
        #expect(try chunks[4].content() == .error(.ioError, message: "", offset: 512))
        #expect(try chunks[5].content() == NBDReplyContent.none)
    }

    func chunk(_ type: NBDReplyType, flags: NBDReplyFlags = .done, _ payload: [UInt8]) -> NBDReceivedChunk {
        NBDReceivedChunk(flags: flags, type: type, cookie: 1, payload: ByteBuffer(bytes: payload))
    }

    @Test("chunks that contradict their type are protocol errors; unknown error types are errors")
    func malformedChunks() throws {
        let bad: [NBDReceivedChunk] = [
            chunk(.none, [0]),
            chunk(.none, flags: [], []),
            chunk(.offsetData, [0, 0, 0, 0, 0, 0, 0, 0]),
            chunk(.offsetHole, [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            chunk(.blockStatus, [0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]),
            chunk(.blockStatus, [0, 0, 0, 1, 0, 0]),
            chunk(.error, [0, 0, 0, 22, 0, 9, 65]),
            chunk(NBDReplyType(rawValue: 42), []),
        ]
        for chunk in bad {
            #expect(throws: NBDProtocolError.self, "\(chunk.type.rawValue) \(chunk.payload.readableBytes)") {
                try chunk.content()
            }
        }
        let future = chunk(NBDReplyType(rawValue: 0x8000 | 99), [0, 0, 0, 5, 0, 1, 65])
        #expect(try future.content() == .error(.ioError, message: "A", offset: nil))
        var parser = transmissionParser()
        parser.append(
            ByteBuffer(bytes: [0x66, 0x8e, 0x33, 0xef, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff]))
        #expect { try parser.next() } throws: { ($0 as? NBDProtocolError)?.code == .replyTooLarge }
        var magic = transmissionParser()
        magic.append(ByteBuffer(bytes: [1, 2, 3, 4]))
        #expect { try magic.next() } throws: { ($0 as? NBDProtocolError)?.code == .badReplyMagic }
    }
}
