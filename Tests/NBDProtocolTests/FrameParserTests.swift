import CairnTestSupport
import NBDProtocol
import NIOCore
import Testing

/// Byte builders shared by the protocol tests.
enum Wire {
    static func option(_ code: NBDOptionCode, _ data: ByteBuffer = ByteBuffer()) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.writeInteger(NBDMagic.option)
        buffer.writeInteger(code.rawValue)
        buffer.writeInteger(UInt32(data.readableBytes))
        buffer.writeImmutableBuffer(data)
        return buffer
    }

    static func infoData(_ name: String, _ requests: [UInt16]) -> ByteBuffer {
        var data = ByteBuffer()
        data.writeInteger(UInt32(name.utf8.count))
        data.writeString(name)
        data.writeInteger(UInt16(requests.count))
        for request in requests { data.writeInteger(request) }
        return data
    }

    static func metaData(_ name: String, _ queries: [String]) -> ByteBuffer {
        var data = ByteBuffer()
        data.writeInteger(UInt32(name.utf8.count))
        data.writeString(name)
        data.writeInteger(UInt32(queries.count))
        for query in queries {
            data.writeInteger(UInt32(query.utf8.count))
            data.writeString(query)
        }
        return data
    }

    static func request(
        _ type: NBDCommandType,
        flags: NBDCommandFlags = [],
        cookie: UInt64 = 0x1122_3344_5566_7788,
        offset: UInt64 = 0,
        length: UInt64,
        payload: [UInt8] = [],
        extended: Bool = false
    ) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.writeInteger(extended ? NBDMagic.extendedRequest : NBDMagic.request)
        buffer.writeInteger(flags.rawValue)
        buffer.writeInteger(type.rawValue)
        buffer.writeInteger(cookie)
        buffer.writeInteger(offset)
        if extended { buffer.writeInteger(length) } else { buffer.writeInteger(UInt32(length)) }
        buffer.writeBytes(payload)
        return buffer
    }
}

extension NBDFrameParser {
    /// Feeds `bytes` one byte at a time and collects every message.
    mutating func feedBytewise(_ bytes: ByteBuffer) throws -> [NBDClientMessage] {
        var messages: [NBDClientMessage] = []
        for byte in bytes.readableBytesView {
            append(ByteBuffer(bytes: [byte]))
            while let message = try next() { messages.append(message) }
        }
        return messages
    }

    mutating func feed(_ bytes: ByteBuffer) throws -> [NBDClientMessage] {
        append(bytes)
        var messages: [NBDClientMessage] = []
        while let message = try next() { messages.append(message) }
        return messages
    }
}

@Suite("frame parser")
struct FrameParserTests {
    func options(_ stream: ByteBuffer, bytewise: Bool = true) throws -> [NBDOption] {
        var parser = NBDFrameParser()
        var flags = ByteBuffer()
        flags.writeInteger(UInt32(3))
        var all = flags
        all.writeImmutableBuffer(stream)
        let messages = try bytewise ? parser.feedBytewise(all) : parser.feed(all)
        guard case .clientFlags(let clientFlags) = messages.first else {
            Issue.record("no client flags")
            return []
        }
        #expect(clientFlags == [.fixedNewstyle, .noZeroes])
        return messages.dropFirst().compactMap { if case .option(let option) = $0 { option } else { nil } }
    }

    @Test("every option form parses, fed one byte at a time")
    func everyOption() throws {
        var stream = ByteBuffer()
        stream.writeImmutableBuffer(Wire.option(.exportName, ByteBuffer(string: "disk")))
        stream.writeImmutableBuffer(Wire.option(.abort, ByteBuffer(string: "ignored")))
        stream.writeImmutableBuffer(Wire.option(.list))
        stream.writeImmutableBuffer(Wire.option(.startTLS))
        stream.writeImmutableBuffer(Wire.option(.info, Wire.infoData("a", [3, 1, 99])))
        stream.writeImmutableBuffer(Wire.option(.go, Wire.infoData("", [])))
        stream.writeImmutableBuffer(Wire.option(.structuredReply))
        stream.writeImmutableBuffer(Wire.option(.listMetaContext, Wire.metaData("d", [])))
        stream.writeImmutableBuffer(Wire.option(.setMetaContext, Wire.metaData("d", ["base:allocation", "x-y:z"])))
        stream.writeImmutableBuffer(Wire.option(.extendedHeaders))
        stream.writeImmutableBuffer(Wire.option(.peekExport, ByteBuffer(string: "skipped")))
        stream.writeImmutableBuffer(Wire.option(NBDOptionCode(rawValue: 0xdead), ByteBuffer(repeating: 1, count: 100)))
        let parsed = try options(stream)
        #expect(
            parsed == [
                .exportName("disk"), .abort, .list, .startTLS,
                .info(NBDInfoRequest(exportName: "a", requests: [.blockSize, .name, NBDInfoType(rawValue: 99)])),
                .go(NBDInfoRequest(exportName: "", requests: [])), .structuredReply,
                .listMetaContext(NBDMetaContextRequest(exportName: "d", queries: [])),
                .setMetaContext(NBDMetaContextRequest(exportName: "d", queries: ["base:allocation", "x-y:z"])),
                .extendedHeaders, .unknown(.peekExport), .unknown(NBDOptionCode(rawValue: 0xdead)),
            ]
        )
        #expect(try options(stream, bytewise: false) == parsed)
    }

    @Test("bad option lengths become malformed options, not errors")
    func malformedOptions() throws {
        var badInfo = Wire.infoData("abc", [1])
        badInfo.writeInteger(UInt8(0))  // trailing byte
        var nameTooLong = ByteBuffer()
        nameTooLong.writeInteger(UInt32(100))  // name length beyond the data
        nameTooLong.writeString("x")
        var queryTooLong = Wire.metaData("d", [])
        queryTooLong.moveWriterIndex(to: queryTooLong.writerIndex - 4)
        queryTooLong.writeInteger(UInt32(1))
        queryTooLong.writeInteger(UInt32(50))
        var tooManyQueries = Wire.metaData("d", [])
        tooManyQueries.moveWriterIndex(to: tooManyQueries.writerIndex - 4)
        tooManyQueries.writeInteger(UInt32.max)
        let cases: [(ByteBuffer, NBDOptionCode)] = [
            (Wire.option(.list, ByteBuffer(string: "x")), .list),
            (Wire.option(.structuredReply, ByteBuffer(string: "x")), .structuredReply),
            (Wire.option(.extendedHeaders, ByteBuffer(string: "x")), .extendedHeaders),
            (Wire.option(.startTLS, ByteBuffer(string: "x")), .startTLS),
            (Wire.option(.info, badInfo), .info),
            (Wire.option(.go, nameTooLong), .go),
            (Wire.option(.go, ByteBuffer(bytes: [0, 0])), .go),
            (Wire.option(.setMetaContext, queryTooLong), .setMetaContext),
            (Wire.option(.listMetaContext, tooManyQueries), .listMetaContext),
            (Wire.option(.exportName, ByteBuffer(bytes: [0x61, 0x00, 0x62])), .exportName),  // NUL in a string
            (Wire.option(.exportName, ByteBuffer(bytes: [0xff, 0xfe])), .exportName),  // not UTF-8
            (Wire.option(.exportName, ByteBuffer(repeating: 0x61, count: 4097)), .exportName),  // over 4096 bytes
        ]
        for (stream, code) in cases {
            let parsed = try options(stream)
            guard case .malformed(let malformedCode, _) = parsed.first else {
                Issue.record("\(code): \(parsed)")
                continue
            }
            #expect(malformedCode == code)
        }
        #expect(
            try options(Wire.option(.exportName, ByteBuffer(repeating: 0x61, count: 4096))) == [
                .exportName(String(repeating: "a", count: 4096))
            ]
        )
    }

    @Test("bad option magic and oversized option data are protocol errors")
    func optionErrors() throws {
        var parser = NBDFrameParser()
        var bytes = ByteBuffer()
        bytes.writeInteger(UInt32(1))
        bytes.writeInteger(UInt64(0x1234))
        bytes.writeInteger(UInt64(0))
        #expect(throws: NBDProtocolError(.badOptionMagic, "option magic 0x1234 is not IHAVEOPT")) {
            try parser.feed(bytes)
        }

        var big = NBDFrameParser()
        var header = ByteBuffer()
        header.writeInteger(UInt32(1))
        header.writeInteger(NBDMagic.option)
        header.writeInteger(NBDOptionCode.go.rawValue)
        header.writeInteger(UInt32(NBDLimits.maximumOptionDataLength + 1))
        #expect { try big.feed(header) } throws: { ($0 as? NBDProtocolError)?.code == .optionTooLarge }
    }

    @Test("a truncated frame yields nothing until it completes")
    func truncated() throws {
        var parser = NBDFrameParser()
        var flags = ByteBuffer()
        flags.writeInteger(UInt32(1))
        _ = try parser.feed(flags)
        var option = Wire.option(.go, Wire.infoData("disk", [3]))
        let first = option.readSlice(length: option.readableBytes - 1)!
        #expect(try parser.feed(first).isEmpty)
        #expect(parser.bufferedBytes == first.readableBytes)
        #expect(try parser.feed(option).count == 1)
        #expect(parser.bufferedBytes == 0)
    }

    func transmissionParser(extended: Bool = false) throws -> NBDFrameParser {
        var parser = NBDFrameParser()
        var flags = ByteBuffer()
        flags.writeInteger(UInt32(1))
        _ = try parser.feed(flags)
        parser.enterTransmission(extendedHeaders: extended)
        return parser
    }

    func requests(_ messages: [NBDClientMessage]) -> [NBDRequest] {
        messages.compactMap { if case .request(let request) = $0 { request } else { nil } }
    }

    @Test("compact requests with payloads, fed one byte at a time")
    func compactRequests() throws {
        var parser = try transmissionParser()
        var stream = Wire.request(.write, flags: .fua, offset: 4096, length: 5, payload: [1, 2, 3, 4, 5])
        stream.writeImmutableBuffer(Wire.request(.read, offset: 512, length: 1024))
        stream.writeImmutableBuffer(Wire.request(.disconnect, length: 0))
        let parsed = requests(try parser.feedBytewise(stream))
        #expect(parsed.map(\.type) == [.write, .read, .disconnect])
        #expect(parsed[0].flags == .fua && parsed[0].offset == 4096 && parsed[0].length == 5)
        #expect(parsed[0].cookie == 0x1122_3344_5566_7788 && !parsed[0].isExtended)
        guard case .data(let data) = parsed[0].payload else {
            Issue.record("no payload")
            return
        }
        #expect(Array(data.readableBytesView) == [1, 2, 3, 4, 5])
        #expect(parsed[1].length == 1024 && parsed[1].payload.bufferedBytes == 0)
    }

    @Test("extended requests: WRITE carries a payload with or without PAYLOAD_LEN; other commands only with it")
    func extendedRequests() throws {
        var parser = try transmissionParser(extended: true)
        var stream = Wire.request(.write, offset: 8, length: 3, payload: [7, 8, 9], extended: true)
        stream.writeImmutableBuffer(
            Wire.request(.write, flags: .payloadLength, length: 2, payload: [1, 1], extended: true)
        )
        stream.writeImmutableBuffer(
            Wire.request(.blockStatus, flags: .payloadLength, length: 4, payload: [0, 0, 0, 1], extended: true)
        )
        stream.writeImmutableBuffer(Wire.request(.trim, offset: 0, length: 1 << 40, extended: true))
        let parsed = requests(try parser.feedBytewise(stream))
        #expect(parsed.map(\.payload.bufferedBytes) == [3, 2, 4, 0])
        #expect(parsed[3].length == 1 << 40 && parsed.allSatisfy(\.isExtended))
    }

    @Test("bad request magic, and the compact magic once extended headers are on, are protocol errors")
    func requestMagic() throws {
        var parser = try transmissionParser()
        #expect { try parser.feed(Wire.request(.read, length: 1, extended: true)) } throws: {
            ($0 as? NBDProtocolError)?.code == .badRequestMagic
        }
        var extended = try transmissionParser(extended: true)
        var compact = Wire.request(.read, length: 1)
        compact.writeInteger(UInt32(0))
        #expect { try extended.feed(compact) } throws: { ($0 as? NBDProtocolError)?.code == .badRequestMagic }
    }

    @Test("a payload over the limit is discarded without buffering; one over the discard limit is an error")
    func oversizedPayloads() throws {
        var parser = NBDFrameParser(maximumPayload: 16, maximumDiscardedPayload: 64)
        var flags = ByteBuffer()
        flags.writeInteger(UInt32(1))
        _ = try parser.feed(flags)
        parser.enterTransmission(extendedHeaders: false)
        #expect(try parser.feed(Wire.request(.write, length: 40)).isEmpty)
        for _ in 0..<39 {
            #expect(try parser.feed(ByteBuffer(bytes: [0xaa])).isEmpty)
            #expect(parser.bufferedBytes == 0, "discarded bytes are never kept")
        }
        var tail = ByteBuffer(bytes: [0xaa])
        tail.writeImmutableBuffer(Wire.request(.read, length: 8))
        let parsed = requests(try parser.feed(tail))
        guard case .discarded(let length) = parsed.first?.payload else {
            Issue.record("\(parsed)")
            return
        }
        #expect(length == 40 && parsed.count == 2 && parsed[1].type == .read)

        #expect { try parser.feed(Wire.request(.write, length: 65)) } throws: {
            ($0 as? NBDProtocolError)?.code == .payloadTooLarge
        }
    }

    @Test("after close any byte is a protocol error")
    func closed() throws {
        var parser = try transmissionParser()
        parser.close()
        #expect(try parser.feed(ByteBuffer()).isEmpty)
        #expect { try parser.feed(ByteBuffer(bytes: [1])) } throws: {
            ($0 as? NBDProtocolError)?.code == .unexpectedData
        }
    }

    /// Random splits of a random request stream parse to the same requests. Prints its seed on failure.
    @Test("randomly split streams parse identically", arguments: [UInt64.random(in: 1...UInt64.max), 42])
    func randomSplits(seed: UInt64) throws {
        var rng = SeededGenerator(seed: seed)
        var stream = ByteBuffer()
        var expected: [(NBDCommandType, Int)] = []
        for cookie in 0..<200 {
            let size = Int(rng.next() % 5000)
            if rng.next() % 2 == 0 {
                stream.writeImmutableBuffer(
                    Wire.request(
                        .write,
                        cookie: UInt64(cookie),
                        length: UInt64(size),
                        payload: [UInt8](repeating: UInt8(cookie % 256), count: size)
                    )
                )
                expected.append((.write, size))
            } else {
                stream.writeImmutableBuffer(Wire.request(.read, cookie: UInt64(cookie), length: UInt64(size)))
                expected.append((.read, 0))
            }
        }
        var parser = try transmissionParser()
        var parsed: [NBDRequest] = []
        while stream.readableBytes > 0 {
            let piece = stream.readSlice(length: min(stream.readableBytes, Int(rng.next() % 9000) + 1))!
            parsed += requests(try parser.feed(piece))
        }
        #expect(parsed.count == expected.count, "seed \(seed)")
        for (index, request) in parsed.enumerated() {
            #expect(request.cookie == UInt64(index) && request.type == expected[index].0, "seed \(seed)")
            if case .data(let data) = request.payload {
                #expect(
                    data.readableBytes == expected[index].1
                        && data.readableBytesView.allSatisfy { $0 == UInt8(index % 256) },
                    "seed \(seed)"
                )
            }
        }
    }
}

