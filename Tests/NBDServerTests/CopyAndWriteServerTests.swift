import Foundation
import NBDProtocol
import NBDServer
import NIOCore
import Testing

extension RawClient {
    /// Structured replies (or extended headers), SET_META_CONTEXT with `contexts`, GO. Returns the names
    /// the server selected.
    @discardableResult
    func negotiate(export: String, contexts: [String], extended: Bool = false) throws -> [String] {
        try greet()
        try sendOption(extended ? .extendedHeaders : .structuredReply)
        let negotiated = try receiveOptionReplies()
        try check(negotiated.last?.type == .ack)
        try send(.setMetaContext(NBDMetaContextRequest(exportName: export, queries: contexts)))
        let selected = try receiveOptionReplies().compactMap { reply -> String? in
            guard reply.type == .metaContext else { return nil }
            return reply.data.getString(at: reply.data.readerIndex + 4, length: reply.data.readableBytes - 4)
        }
        try send(.go(NBDInfoRequest(exportName: export, requests: [])))
        let entered = try receiveOptionReplies()
        try check(entered.last?.type == .ack, "GO failed: \(entered.map(\.type))")
        return selected
    }

    /// Context names listed for `queries`.
    func listContexts(export: String, queries: [String]) throws -> [String] {
        try send(.listMetaContext(NBDMetaContextRequest(exportName: export, queries: queries)))
        return try receiveOptionReplies().compactMap { reply in
            reply.type == .metaContext
                ? reply.data.getString(at: reply.data.readerIndex + 4, length: reply.data.readableBytes - 4) : nil
        }
    }

    func sendCopyAndWrite(
        cookie: UInt64, target: UInt64, source: UInt64, copySize: UInt32, bufferOffset: UInt32, buffer: ByteBuffer,
        flags: NBDCommandFlags = [], extended: Bool = false
    ) throws {
        var payload = ByteBuffer()
        let fields = NBDCopyAndWritePayload(
            sourceOffset: source, copySize: copySize, bufferOffset: bufferOffset, buffer: buffer)
        payload.writeNBDCopyAndWritePayloadHeader(fields)
        payload.writeImmutableBuffer(buffer)
        try sendRequest(
            .cairnCopyAndWrite, flags: flags, cookie: cookie, offset: target, length: UInt64(payload.readableBytes),
            payload: payload, extended: extended)
    }

    /// The wire error of a one-chunk reply (nil for success), and the error message if any.
    func receiveCompletion() throws -> (cookie: UInt64, error: NBDWireError?, message: String) {
        switch try receiveReply() {
        case .simple(let error, let cookie):
            return (cookie, error == 0 ? nil : NBDWireError(rawValue: error), "")
        case .chunk(let chunk):
            try check(chunk.flags.contains(.done))
            guard chunk.type.isError else { return (chunk.cookie, nil, "") }
            var payload = chunk.payload
            let error = NBDWireError(rawValue: payload.readInteger()!)
            let length: UInt16 = payload.readInteger()!
            return (chunk.cookie, error, payload.readString(length: Int(length)) ?? "")
        }
    }
}

/// NBD_CMD_CAIRN_COPY_AND_WRITE and `x-cairn:copy-on-write` through the real server with the memory
/// export, whose 64 KiB pages stand in for copy-on-write chunks.
@Suite("copy-and-write server", .serialized)
struct CopyAndWriteServerTests {
    static let chunk = UInt32(MemoryExport.pageSize)
    static let context = NBDCopyOnWrite.contextName

    static func export(readOnly: Bool = false) -> MemoryExport {
        var capabilities = MemoryExport.allCapabilities.union(.copyAndWrite)
        if readOnly { capabilities.insert(.readOnly) }
        return MemoryExport(name: "disk", size: 1 << 20, capabilities: capabilities)
    }

    @Test("the context is listed for an empty query and for x-cairn:, never selected by a wildcard")
    func listing() async throws {
        try await withServer([Self.export(), MemoryExport(name: "plain", size: 1 << 20)]) { server, _ in
            try await blocking {
                let client = try RawClient(port: server.port)
                try client.greet()
                try client.sendOption(.structuredReply)
                _ = try client.receiveOptionReplies()
                #expect(try client.listContexts(export: "disk", queries: []) == ["base:allocation", Self.context])
                #expect(try client.listContexts(export: "disk", queries: ["base:"]) == ["base:allocation"])
                #expect(try client.listContexts(export: "disk", queries: ["x-cairn:"]) == [Self.context])
                #expect(try client.listContexts(export: "plain", queries: []) == ["base:allocation"])
                let wildcard = try RawClient(port: server.port)
                #expect(try wildcard.negotiate(export: "disk", contexts: ["x-cairn:"]).isEmpty)
            }
        }
    }

    @Test("after SET_META_CONTEXT: target = source + buffer, source untouched, target reported unshared")
    func copyAndWrite() async throws {
        let export = Self.export()
        try await withServer([export]) { server, _ in
            try await blocking {
                let client = try RawClient(port: server.port)
                #expect(
                    try client.negotiate(export: "disk", contexts: ["base:allocation", Self.context]) == [
                        "base:allocation", Self.context,
                    ])
                try client.sendRequest(
                    .write, cookie: 1, offset: 0, length: UInt64(Self.chunk),
                    payload: ByteBuffer(repeating: 0x11, count: Int(Self.chunk)))
                _ = try client.receiveCompletion()
                export.markShared(offset: 0, length: 4 * UInt64(Self.chunk))
                try client.sendCopyAndWrite(
                    cookie: 2, target: 2 * UInt64(Self.chunk), source: 0, copySize: Self.chunk, bufferOffset: 4096,
                    buffer: ByteBuffer(repeating: 0xee, count: 8192), flags: .fua)
                let reply = try client.receiveCompletion()
                #expect(reply.cookie == 2 && reply.error == nil, "\(reply.message)")

                try client.sendRequest(.blockStatus, cookie: 3, offset: 0, length: 4 * UInt64(Self.chunk))
                let chunks = try client.receiveChunks()
                let cow = try #require(
                    chunks.first { $0.payload.getInteger(at: $0.payload.readerIndex, as: UInt32.self) == 2 })
                var descriptors = cow.payload
                descriptors.moveReaderIndex(forwardBy: 4)
                var status: [(UInt32, UInt32)] = []
                while let length: UInt32 = descriptors.readInteger(), let flags: UInt32 = descriptors.readInteger() {
                    status.append((length, flags))
                }
                #expect(status.map(\.0) == [2 * Self.chunk, Self.chunk, Self.chunk])
                #expect(status.map(\.1) == [1, 0, 1], "only the target became unshared")
            }
            let target = export.contents(offset: 2 * UInt64(Self.chunk), length: Int(Self.chunk))
            #expect(target[..<4096].allSatisfy { $0 == 0x11 } && target[4096..<12288].allSatisfy { $0 == 0xee })
            #expect(target[12288...].allSatisfy { $0 == 0x11 })
            #expect(export.contents(offset: 0, length: Int(Self.chunk)).allSatisfy { $0 == 0x11 }, "source unchanged")
            #expect(export.counters.copyAndWrites == 1 && export.counters.fuaWrites == 1)
        }
    }

    @Test("without the context: EINVAL, the payload is consumed and the stream stays in sync")
    func refusedWithoutContext() async throws {
        let export = Self.export()
        try await withServer([export]) { server, _ in
            try await blocking {
                for structured in [true, false] {
                    let client = try RawClient(port: server.port)
                    try client.handshake(export: "disk", structured: structured)
                    try client.sendCopyAndWrite(
                        cookie: 7, target: 0, source: UInt64(Self.chunk), copySize: Self.chunk, bufferOffset: 0,
                        buffer: ByteBuffer(repeating: 0xab, count: 4096))
                    let refused = try client.receiveCompletion()
                    #expect(refused.cookie == 7 && refused.error == .invalid)
                    #expect(!structured || refused.message.contains(Self.context), "\(refused.message)")
                    try client.sendRequest(.flush, cookie: 8, offset: 0, length: 0)
                    let flushed = try client.receiveCompletion()
                    #expect(flushed.cookie == 8 && flushed.error == nil, "the payload was not taken for a header")
                }
            }
            #expect(export.counters.copyAndWrites == 0 && export.counters.flushes == 2)
        }
    }

    @Test("a read-only export refuses it with EPERM, even with the context selected")
    func readOnly() async throws {
        let export = Self.export(readOnly: true)
        try await withServer([export]) { server, _ in
            try await blocking {
                let client = try RawClient(port: server.port)
                try client.negotiate(export: "disk", contexts: [Self.context])
                try client.sendCopyAndWrite(
                    cookie: 1, target: 0, source: UInt64(Self.chunk), copySize: Self.chunk, bufferOffset: 0,
                    buffer: ByteBuffer(repeating: 1, count: 512))
                #expect(try client.receiveCompletion().error == .permissionDenied)
            }
            #expect(export.counters.copyAndWrites == 0)
        }
    }

    @Test("bad arguments: EINVAL or ENOSPC with a message; extended headers with PAYLOAD_LEN work")
    func badArguments() async throws {
        let export = Self.export()
        try await withServer([export]) { server, _ in
            try await blocking {
                let client = try RawClient(port: server.port)
                try client.negotiate(export: "disk", contexts: [Self.context])
                let buffer = ByteBuffer(repeating: 3, count: 512)
                let cases: [(UInt64, UInt64, UInt32, UInt32, NBDWireError)] = [
                    (0, UInt64(Self.chunk), 4096, 0, .invalid),  // the export's chunk size is 64 KiB
                    (0, UInt64(Self.chunk), Self.chunk, Self.chunk - 256, .invalid),  // buffer past the chunk
                    ((1 << 20) - 4096, 0, Self.chunk, 0, .noSpace),  // target past the end
                    (0, 1 << 20, Self.chunk, 0, .invalid),  // source past the end
                ]
                for (index, (target, source, copySize, bufferOffset, expected)) in cases.enumerated() {
                    try client.sendCopyAndWrite(
                        cookie: UInt64(index), target: target, source: source, copySize: copySize,
                        bufferOffset: bufferOffset, buffer: buffer)
                    let reply = try client.receiveCompletion()
                    #expect(reply.error == expected && !reply.message.isEmpty, "case \(index): \(reply)")
                }
                // A header without a buffer.
                try client.sendRequest(
                    .cairnCopyAndWrite, cookie: 9, offset: 0, length: 8, payload: ByteBuffer(repeating: 0, count: 8))
                #expect(try client.receiveCompletion().error == .invalid)

                let extended = try RawClient(port: server.port)
                try extended.negotiate(export: "disk", contexts: [Self.context], extended: true)
                try extended.sendCopyAndWrite(
                    cookie: 10, target: UInt64(Self.chunk), source: 0, copySize: Self.chunk, bufferOffset: 0,
                    buffer: buffer,
                    flags: .payloadLength, extended: true)
                #expect(try extended.receiveCompletion().error == nil)
            }
            #expect(export.counters.copyAndWrites == 1)
        }
    }
}
