import NBDProtocol
import NIOCore
import Testing

/// Golden bytes, written out by hand from proto.md's message layouts.
@Suite("reply encoders")
struct EncoderTests {
    func bytes(_ body: (inout ByteBuffer) -> Void) -> [UInt8] {
        var buffer = ByteBuffer()
        body(&buffer)
        return Array(buffer.readableBytesView)
    }

    func hex(_ string: String) -> [UInt8] {
        let digits = string.filter { !$0.isWhitespace }
        return stride(from: 0, to: digits.count, by: 2).map {
            let start = digits.index(digits.startIndex, offsetBy: $0)
            return UInt8(digits[start..<digits.index(start, offsetBy: 2)], radix: 16)!
        }
    }

    @Test("greeting: NBDMAGIC, IHAVEOPT, FIXED_NEWSTYLE|NO_ZEROES")
    func greeting() {
        #expect(
            bytes { $0.writeNBDGreeting(flags: [.fixedNewstyle, .noZeroes]) }
                == hex("4e42444d41474943 49484156454f5054 0003")
        )
    }

    @Test("EXPORT_NAME reply: size, flags, 124 zeroes unless NO_ZEROES")
    func exportNameReply() {
        let short = bytes { $0.writeNBDExportNameReply(size: 0x1000, flags: [.hasFlags, .sendFlush], noZeroes: true) }
        #expect(short == hex("0000000000001000 0005"))
        let long = bytes { $0.writeNBDExportNameReply(size: 0x1000, flags: [.hasFlags], noZeroes: false) }
        #expect(long.count == 10 + 124 && long.suffix(124).allSatisfy { $0 == 0 })
    }

    @Test("option replies: ACK, SERVER, INFO (all four), META_CONTEXT, errors with and without message")
    func optionReplies() {
        let prefix = "0003e889045565a9"
        #expect(bytes { $0.writeNBDOptionReply(.ack, option: .go) } == hex("\(prefix) 00000007 00000001 00000000"))
        #expect(
            bytes { $0.writeNBDOptionReply(.server(name: "ab", description: "c"), option: .list) }
                == hex("\(prefix) 00000003 00000002 00000007 00000002 6162 63")
        )
        #expect(
            bytes { $0.writeNBDOptionReply(.info(.export(size: 512, flags: [.hasFlags, .readOnly])), option: .info) }
                == hex("\(prefix) 00000006 00000003 0000000c 0000 0000000000000200 0003")
        )
        #expect(
            bytes { $0.writeNBDOptionReply(.info(.name("n")), option: .go) }
                == hex("\(prefix) 00000007 00000003 00000003 0001 6e")
        )
        #expect(
            bytes { $0.writeNBDOptionReply(.info(.description("d")), option: .go) }
                == hex("\(prefix) 00000007 00000003 00000003 0002 64")
        )
        let sizes = NBDBlockSizeConstraints(minimum: 512, preferred: 4096, maximumPayload: 0x0200_0000)
        #expect(
            bytes { $0.writeNBDOptionReply(.info(.blockSize(sizes)), option: .go) }
                == hex("\(prefix) 00000007 00000003 0000000e 0003 00000200 00001000 02000000")
        )
        #expect(
            bytes { $0.writeNBDOptionReply(.metaContext(id: 1, name: "base:allocation"), option: .setMetaContext) }
                == hex("\(prefix) 0000000a 00000004 00000013 00000001") + Array("base:allocation".utf8)
        )
        #expect(
            bytes {
                $0.writeNBDOptionReply(.error(.errorUnsupported, message: nil), option: NBDOptionCode(rawValue: 99))
            }
                == hex("\(prefix) 00000063 80000001 00000000")
        )
        #expect(
            bytes { $0.writeNBDOptionReply(.error(.errorShutdown, message: "bye"), option: .list) }
                == hex("\(prefix) 00000003 80000007 00000003 627965")
        )
        // Messages are cut to proto.md's 4096-byte string limit.
        let long = bytes {
            $0.writeNBDOptionReply(.error(.errorInvalid, message: String(repeating: "é", count: 3000)), option: .list)
        }
        #expect(long.count == 20 + 4096)
    }

    @Test("error reply types have bit 31 set; values match proto.md")
    func replyTypeValues() {
        let errors: [NBDOptionReplyType] = [
            .errorUnsupported, .errorPolicy, .errorInvalid, .errorPlatform, .errorTLSRequired, .errorUnknown,
            .errorShutdown, .errorBlockSizeRequired, .errorTooBig, .errorExtendedHeaderRequired,
        ]
        #expect(errors.map { $0.rawValue - 0x8000_0000 } == Array(1...10))
        #expect(errors.allSatisfy(\.isError) && !NBDOptionReplyType.ack.isError)
        #expect(NBDOptionCode.extendedHeaders.rawValue == 11 && NBDOptionCode.setMetaContext.rawValue == 10)
        let wire: [NBDWireError] = [
            .permissionDenied, .ioError, .outOfMemory, .invalid, .noSpace, .overflow, .notSupported, .shutdown,
        ]
        #expect(wire.map(\.rawValue) == [1, 5, 12, 22, 28, 75, 95, 108])
        #expect(
            NBDCommandFlags.payloadLength.rawValue == 1 << 5 && NBDTransmissionFlags.sendFastZero.rawValue == 1 << 11
        )
    }

    @Test("simple reply")
    func simpleReply() {
        #expect(
            bytes { $0.writeNBDSimpleReply(error: nil, cookie: 0x0102) } == hex("67446698 00000000 0000000000000102")
        )
        #expect(
            bytes { $0.writeNBDSimpleReply(error: .noSpace, cookie: 1) } == hex("67446698 0000001c 0000000000000001")
        )
    }

    @Test("structured chunks: NONE, OFFSET_DATA header, OFFSET_HOLE, BLOCK_STATUS, ERROR, ERROR_OFFSET")
    func structuredChunks() {
        func chunk(_ chunk: NBDReplyChunk, _ flags: NBDReplyFlags = .done) -> [UInt8] {
            bytes {
                $0.writeNBDReplyChunk(chunk, flags: flags, cookie: 9, requestOffset: 0x100, extendedHeaders: false)
            }
        }
        let header = "668e33ef"
        #expect(chunk(.none) == hex("\(header) 0001 0000 0000000000000009 00000000"))
        #expect(
            chunk(.offsetData(offset: 0x200, dataLength: 4), [])
                == hex("\(header) 0000 0001 0000000000000009 0000000c 0000000000000200")
        )
        #expect(
            chunk(.offsetHole(offset: 0x200, length: 0x1000))
                == hex("\(header) 0001 0002 0000000000000009 0000000c 0000000000000200 00001000")
        )
        #expect(
            chunk(
                .blockStatus(
                    contextID: 1,
                    descriptors: [
                        NBDBlockDescriptor(length: 512, flags: 3), NBDBlockDescriptor(length: 1024, flags: 0),
                    ]
                )
            )
                == hex("\(header) 0001 0005 0000000000000009 00000014 00000001 00000200 00000003 00000400 00000000")
        )
        #expect(
            chunk(.error(.ioError, message: "x"))
                == hex("\(header) 0001 8001 0000000000000009 00000007 00000005 0001 78")
        )
        #expect(
            chunk(.errorOffset(.ioError, message: "", offset: 0x300))
                == hex("\(header) 0001 8002 0000000000000009 0000000e 00000005 0000 0000000000000300")
        )
    }

    @Test("extended chunks: 32-byte header echoing the request offset; BLOCK_STATUS_EXT with 64-bit extents")
    func extendedChunks() {
        func chunk(_ chunk: NBDReplyChunk) -> [UInt8] {
            bytes { $0.writeNBDReplyChunk(chunk, flags: .done, cookie: 9, requestOffset: 0x100, extendedHeaders: true) }
        }
        let header = "6e8a278c 0001"
        #expect(chunk(.none) == hex("\(header) 0000 0000000000000009 0000000000000100 0000000000000000"))
        #expect(
            chunk(.blockStatusExtended(contextID: 2, descriptors: [NBDBlockDescriptor(length: 1 << 33, flags: 1)]))
                == hex(
                    "\(header) 0006 0000000000000009 0000000000000100 0000000000000018 00000002 00000001 0000000200000000 00000000 00000001"
                )
        )
        #expect(
            chunk(.offsetHole(offset: 0x100, length: 5))
                == hex("\(header) 0002 0000000000000009 0000000000000100 000000000000000c 0000000000000100 00000005")
        )
    }

    @Test("completion replies follow the negotiated style")
    func completions() {
        let write = NBDRequest(flags: [], type: .write, cookie: 3, offset: 0x40, length: 1)
        let read = NBDRequest(flags: [], type: .read, cookie: 3, offset: 0x40, length: 0)
        let error = NBDRequestRejection(.invalid, "no")
        func completion(_ rejection: NBDRequestRejection?, _ request: NBDRequest, _ style: NBDReplyStyle) -> [UInt8] {
            bytes { $0.writeNBDCompletion(rejection, for: request, style: style) }
        }
        #expect(completion(nil, write, .simple) == hex("67446698 00000000 0000000000000003"))
        #expect(completion(error, write, .simple) == hex("67446698 00000016 0000000000000003"))
        #expect(completion(nil, write, .structured) == hex("67446698 00000000 0000000000000003"))
        #expect(
            completion(error, write, .structured)
                == hex("668e33ef 0001 8001 0000000000000003 00000008 00000016 0002 6e6f")
        )
        #expect(completion(nil, read, .structured) == hex("668e33ef 0001 0000 0000000000000003 00000000"))
        #expect(
            completion(nil, write, .extended)
                == hex("6e8a278c 0001 0000 0000000000000003 0000000000000040 0000000000000000")
        )
    }
}
