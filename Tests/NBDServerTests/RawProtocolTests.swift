import Foundation
import InteropSupport
import NBDProtocol
import NBDServer
import NIOCore
import Testing

/// Hand-made byte streams: malformed input, vanishing clients, limits, ordering and shutdown.
@Suite("raw protocol", .serialized)
struct RawProtocolTests {
    static func payload(_ byte: UInt8, _ count: Int) -> ByteBuffer {
        ByteBuffer(repeating: byte, count: count)
    }

    /// qemu-io still works against the same server: one client's misbehaviour hurts nobody else.
    static func expectServerHealthy(_ server: NBDServer) async throws {
        let result = try await runProcess(Tools.qemuIO, ["-f", "raw", server.uri("disk"), "-c", "read 0 4k"])
        #expect(result.status == 0, "\(result)")
    }

    @Test("garbage option magic, unknown client flags and garbage request magic end the connection")
    func garbage() async throws {
        try await withServer([MemoryExport(name: "disk", size: 1 << 20)]) { server, catalog in
            try await blocking {
                let client = try RawClient(port: server.port)
                try client.greet()
                try client.send(ByteBuffer(bytes: Array("GET / HTTP/1.1\r\n\r\n".utf8)))
                #expect(client.isClosedByServer())

                let flags = try RawClient(port: server.port)
                try flags.greet(flags: NBDClientFlags(rawValue: 1 << 5))
                #expect(flags.isClosedByServer())

                let request = try RawClient(port: server.port)
                try request.handshake(export: "disk")
                try request.send(Self.payload(0xee, 28))
                #expect(request.isClosedByServer())
            }
            try await waitUntil { catalog.detachCount == 1 }
            try await Self.expectServerHealthy(server)
        }
    }

    @Test("a truncated frame followed by close leaves the server healthy")
    func truncatedFrame() async throws {
        try await withServer([MemoryExport(name: "disk", size: 1 << 20)]) { server, catalog in
            try await blocking {
                let client = try RawClient(port: server.port)
                try client.greet()
                var half = ByteBuffer()
                half.writeInteger(NBDMagic.option)
                half.writeInteger(NBDOptionCode.go.rawValue)
                try client.send(half)
                client.shutdownWrite()
                #expect(client.isClosedByServer())

                let request = try RawClient(port: server.port)
                try request.handshake(export: "disk")
                try request.send(Self.payload(0x25, 10))
                request.shutdownWrite()
                #expect(request.isClosedByServer())
            }
            try await waitUntil { catalog.detachCount == 1 }
            try await Self.expectServerHealthy(server)
        }
    }

    @Test("a client vanishing mid-WRITE payload or with a WRITE in flight is detached exactly once")
    func vanishingClient() async throws {
        let export = MemoryExport(name: "disk", size: 4 << 20)
        let logs = LogCapture()
        try await withServer([export], logs: logs) { server, catalog in
            try await blocking {
                let client = try RawClient(port: server.port)
                try client.handshake(export: "disk")
                try client.sendRequest(.write, cookie: 1, offset: 0, length: 1 << 20, payload: Self.payload(1, 100_000))
            }
            try await waitUntil { catalog.detachCount == 1 }
            #expect(export.counters.writes == 0, "half a payload never reaches the export")

            // The write is held inside the export until released: the connection closes while it runs.
            export.hold(.write)
            try await blocking {
                let client = try RawClient(port: server.port)
                try client.handshake(export: "disk")
                try client.sendRequest(.write, cookie: 2, offset: 0, length: 4096, payload: Self.payload(2, 4096))
            }
            try await waitUntil { export.heldCount == 1 && logs.metadata(of: "NBD client disconnected").count == 2 }
            // The connection is gone but the write runs: detach waits for it.
            #expect(catalog.detachCount == 1)
            export.release()
            try await waitUntil { catalog.detachCount == 2 }
            #expect(export.counters.writes == 1)
            #expect(export.contents(offset: 0, length: 1) == [2])
            #expect(catalog.detachedSessions.count == Set(catalog.detachedSessions).count, "no session detached twice")
        }
    }

    /// Found by the nbd-transmission fuzz target: a READ or BLOCK_STATUS answered after its client had
    /// gone dereferenced the closed connection's context and stopped the daemon.
    @Test("a client vanishing with a READ and a BLOCK_STATUS in flight: the answers are dropped, the server lives")
    func vanishingReader() async throws {
        let export = MemoryExport(name: "disk", size: 4 << 20)
        let logs = LogCapture()
        try await withServer([export], logs: logs) { server, catalog in
            export.hold(.read)
            export.hold(.blockStatus)
            try await blocking {
                let client = try RawClient(port: server.port)
                try client.handshake(export: "disk")
                try client.sendRequest(.read, cookie: 1, offset: 0, length: 65536)
                try client.sendRequest(.blockStatus, cookie: 2, offset: 0, length: 1 << 20)
            }
            try await waitUntil { export.heldCount == 2 && logs.metadata(of: "NBD client disconnected").count == 1 }
            export.release()
            try await waitUntil { catalog.detachCount == 1 }
            try await Self.expectServerHealthy(server)
        }
    }

    @Test("an oversized WRITE is skipped and refused with EINVAL; an absurd one ends the connection")
    func oversizedWrite() async throws {
        let export = MemoryExport(name: "disk", size: 128 << 20)
        try await withServer([export]) { server, _ in
            try await blocking {
                let client = try RawClient(port: server.port, timeout: 20)
                try client.handshake(export: "disk")
                let length = 40 << 20  // above the 32 MiB payload limit, below the 64 MiB discard limit
                try client.sendRequest(
                    .write,
                    cookie: 7,
                    offset: 0,
                    length: UInt64(length),
                    payload: Self.payload(3, length)
                )
                let chunk = try client.receiveChunk()
                #expect(chunk.type == .error && chunk.cookie == 7 && chunk.flags.contains(.done))
                #expect(chunk.payload.getInteger(at: 0, as: UInt32.self) == NBDWireError.invalid.rawValue)
                // The stream is still in sync.
                try client.sendRequest(.read, cookie: 8, offset: 0, length: 512)
                let read = try client.receiveChunks()
                #expect(read.last?.cookie == 8 && read.allSatisfy { !$0.type.isError })

                try client.sendRequest(.write, cookie: 9, offset: 0, length: 100 << 20)
                #expect(client.isClosedByServer())
            }
            #expect(export.counters.writes == 0)
        }
    }

    @Test("more options than the limit end the negotiation")
    func tooManyOptions() async throws {
        try await withServer([MemoryExport(name: "disk", size: 1 << 20)]) { server, _ in
            try await blocking {
                let client = try RawClient(port: server.port)
                try client.greet()
                for _ in 0..<NBDLimits.maximumOptionCount {
                    try client.sendOption(.list)
                    #expect(try client.receiveOptionReplies().last?.type == .ack)
                }
                try client.sendOption(.list)
                #expect(client.isClosedByServer())
            }
            try await Self.expectServerHealthy(server)
        }
    }

    @Test("replies come back out of order as the export completes them")
    func outOfOrderReplies() async throws {
        let export = MemoryExport(name: "disk", size: 1 << 20)
        export.setDelay(.milliseconds(300), for: .write)
        try await withServer([export]) { server, _ in
            try await blocking {
                let client = try RawClient(port: server.port)
                try client.handshake(export: "disk", structured: false)
                try client.sendRequest(.write, cookie: 1, offset: 0, length: 512, payload: Self.payload(5, 512))
                try client.sendRequest(.read, cookie: 2, offset: 4096, length: 512)
                let first = try client.receiveSimpleReply()
                #expect(first.cookie == 2 && first.error == 0)
                _ = try client.receive(512)
                let second = try client.receiveSimpleReply()
                #expect(second.cookie == 1 && second.error == 0)
            }
        }
    }

    @Test("back-pressure: no more than the in-flight limit reaches the export, and every request is answered")
    func backPressure() async throws {
        let export = MemoryExport(name: "disk", size: 1 << 20)
        export.setDelay(.milliseconds(50))
        var configuration = NBDServerConfiguration(port: 0)
        configuration.flowControl = .init(maximumRequestsInFlight: 2, maximumBytesInFlight: 1 << 20)
        try await withServer([export], configuration: configuration) { server, _ in
            try await blocking {
                let client = try RawClient(port: server.port)
                try client.handshake(export: "disk", structured: false)
                for cookie in 0..<12 {
                    try client.sendRequest(.read, cookie: UInt64(cookie), offset: 0, length: 4096)
                }
                var cookies: Set<UInt64> = []
                for _ in 0..<12 {
                    let reply = try client.receiveSimpleReply()
                    _ = try client.receive(4096)
                    cookies.insert(reply.cookie)
                }
                #expect(cookies == Set(0..<12))
            }
            #expect(export.maxRunning <= 2)
            #expect(export.counters.reads == 12)
        }
    }

    @Test("DISC: requests in flight are answered, then the server closes")
    func disconnectDrains() async throws {
        let export = MemoryExport(name: "disk", size: 1 << 20)
        export.setDelay(.milliseconds(200), for: .write)
        try await withServer([export]) { server, catalog in
            try await blocking {
                let client = try RawClient(port: server.port)
                try client.handshake(export: "disk")
                try client.sendRequest(.write, cookie: 11, offset: 0, length: 512, payload: Self.payload(6, 512))
                try client.sendRequest(.disconnect, cookie: 12, offset: 0, length: 0)
                let reply = try client.receiveSimpleReply()
                #expect(reply.cookie == 11 && reply.error == 0)
                #expect(client.isClosedByServer())
            }
            try await waitUntil { catalog.detachCount == 1 }
        }
    }

    @Test("graceful shutdown: in-flight requests finish, new ones get ESHUTDOWN, handshakes get ERR_SHUTDOWN")
    func gracefulShutdown() async throws {
        let export = MemoryExport(name: "disk", size: 1 << 20)
        // Long enough that the write is still running when shutdown starts and the read arrives, even on
        // a loaded machine (with a short delay the write could finish first, and the connection close).
        export.setDelay(.seconds(3), for: .write)
        try await withServer([export]) { server, catalog in
            let (transmission, negotiating) = try await blocking {
                let transmission = try RawClient(port: server.port)
                try transmission.handshake(export: "disk")
                try transmission.sendRequest(.write, cookie: 21, offset: 0, length: 512, payload: Self.payload(7, 512))
                let negotiating = try RawClient(port: server.port)
                try negotiating.greet()
                return (transmission, negotiating)
            }
            try await Task.sleep(nanoseconds: 50_000_000)
            async let shutdown: Void = server.shutdown(gracePeriod: .seconds(5))
            try await Task.sleep(nanoseconds: 50_000_000)
            try await blocking {
                // The shutdown reaches each connection through its own event loop, so ask until it has.
                // A client still negotiating gets ERR_SHUTDOWN for its options, then may ABORT; one that
                // stays past the 500 ms grace (`handshakeShutdownGrace`, easy on a loaded machine) is
                // closed instead, which is as correct.
                var refusedOption = false
                do {
                    for _ in 0..<40 where !refusedOption {
                        try negotiating.sendOption(.list)
                        refusedOption = try negotiating.receiveOptionReplies().last?.type == .errorShutdown
                        if !refusedOption { usleep(10_000) }
                    }
                    #expect(refusedOption)
                    try negotiating.sendOption(.abort)
                    #expect(try negotiating.receiveOptionReply().type == .ack)
                } catch RawClient.Failure.closed {}
                #expect(negotiating.isClosedByServer())

                // Reads until one is refused with ESHUTDOWN (the write is still running: 3 s).
                var cookie: UInt64 = 22
                var refusedRead = false
                while !refusedRead && cookie < 200 {
                    try transmission.sendRequest(.read, cookie: cookie, offset: 0, length: 512)
                    while true {
                        let chunk = try transmission.receiveChunk()
                        #expect(chunk.cookie == cookie)
                        if chunk.type == .error {
                            #expect(chunk.payload.getInteger(at: 0, as: UInt32.self) == NBDWireError.shutdown.rawValue)
                            refusedRead = true
                        }
                        if chunk.flags.contains(.done) { break }
                    }
                    cookie += 1
                    if !refusedRead { usleep(10_000) }
                }
                #expect(refusedRead)
                let written = try transmission.receiveSimpleReply()
                #expect(written.cookie == 21 && written.error == 0)
                #expect(transmission.isClosedByServer())
            }
            await shutdown
            #expect(export.counters.writes == 1)
            #expect(catalog.detachCount == 1)
            #expect(server.connectionCount == 0)
        }
    }

    @Test("EXPORT_NAME sends 124 zero bytes unless NO_ZEROES was negotiated")
    func exportName() async throws {
        try await withServer([MemoryExport(name: "disk", size: 3 << 20)]) { server, _ in
            try await blocking {
                for noZeroes in [false, true] {
                    let client = try RawClient(port: server.port)
                    try client.greet(flags: noZeroes ? [.fixedNewstyle, .noZeroes] : [.fixedNewstyle])
                    try client.sendOption(.exportName, data: ByteBuffer(string: "disk"))
                    var reply = try client.receive(10)
                    #expect(reply.readInteger(as: UInt64.self) == 3 << 20)
                    let flags = NBDTransmissionFlags(rawValue: reply.readInteger()!)
                    #expect(flags.contains(.hasFlags) && !flags.contains(.sendDF))
                    if !noZeroes {
                        #expect(try client.receive(124).readableBytesView.allSatisfy { $0 == 0 })
                    }
                    try client.sendRequest(.read, cookie: 5, offset: 0, length: 16)
                    #expect(try client.receiveSimpleReply().cookie == 5)
                }
                let unknown = try RawClient(port: server.port)
                try unknown.greet()
                try unknown.sendOption(.exportName, data: ByteBuffer(string: "nope"))
                #expect(unknown.isClosedByServer(), "EXPORT_NAME cannot fail politely: hard disconnect")
            }
        }
    }

    @Test("extended headers: 32-byte requests and replies, WRITE with or without PAYLOAD_LEN, BLOCK_STATUS_EXT")
    func extendedHeaders() async throws {
        let export = MemoryExport(name: "disk", size: 8 << 20)
        try await withServer([export]) { server, _ in
            try await blocking {
                let client = try RawClient(port: server.port)
                try client.handshake(export: "disk", extended: true)
                try client.sendRequest(
                    .write,
                    cookie: 1,
                    offset: 0,
                    length: 4096,
                    payload: Self.payload(8, 4096),
                    extended: true
                )
                let plain = try client.receiveChunk()
                #expect(plain.magic == NBDMagic.extendedReply && plain.type == .none && plain.flags.contains(.done))
                #expect(plain.cookie == 1 && plain.offset == 0)
                try client.sendRequest(
                    .write,
                    flags: .payloadLength,
                    cookie: 2,
                    offset: 65536,
                    length: 4096,
                    payload: Self.payload(9, 4096),
                    extended: true
                )
                #expect(try client.receiveChunk().type == .none)
                // PAYLOAD_LEN on a READ: the payload is consumed and the command refused.
                try client.sendRequest(
                    .read,
                    flags: .payloadLength,
                    cookie: 3,
                    offset: 0,
                    length: 16,
                    payload: Self.payload(0, 16),
                    extended: true
                )
                let refused = try client.receiveChunk()
                #expect(refused.type == .error && refused.cookie == 3)

                try client.sendRequest(.read, cookie: 4, offset: 65536, length: 8192, extended: true)
                let chunks = try client.receiveChunks()
                #expect(chunks.allSatisfy { $0.magic == NBDMagic.extendedReply && $0.offset == 65536 })
                #expect(chunks.first?.type == .offsetData)

                try client.sendRequest(.blockStatus, cookie: 5, offset: 0, length: 8 << 20, extended: true)
                var status = try client.receiveChunk()
                #expect(status.type == .blockStatusExtended && status.flags.contains(.done))
                let contextID: UInt32? = status.payload.readInteger()
                let count: UInt32? = status.payload.readInteger()
                #expect(contextID == 1)
                #expect(count == 2 && status.payload.readableBytes == 2 * 16)
                let firstLength: UInt64? = status.payload.readInteger()
                #expect(firstLength == 128 << 10)
            }
            #expect(export.contents(offset: 65536, length: 1) == [9])
        }
    }

    @Test("an export's error reaches the client as an error chunk with its message")
    func exportErrorMessage() async throws {
        let export = MemoryExport(name: "disk", size: 1 << 20)
        export.failNext(.read, with: NBDExportError(.ioError, "disk on fire"))
        try await withServer([export]) { server, _ in
            try await blocking {
                let client = try RawClient(port: server.port)
                try client.handshake(export: "disk")
                try client.sendRequest(.read, cookie: 31, offset: 0, length: 512)
                var chunk = try client.receiveChunk()
                #expect(chunk.type == .error && chunk.flags.contains(.done))
                #expect(chunk.payload.readInteger(as: UInt32.self) == NBDWireError.ioError.rawValue)
                let length = Int(chunk.payload.readInteger(as: UInt16.self) ?? 0)
                #expect(chunk.payload.readString(length: length) == "disk on fire")
            }
        }
    }

    @Test("the connection limit closes extra connections; the handshake timeout closes idle ones")
    func connectionLimits() async throws {
        var configuration = NBDServerConfiguration(port: 0)
        configuration.maximumConnections = 1
        configuration.handshakeTimeout = .milliseconds(300)
        try await withServer([MemoryExport(name: "disk", size: 1 << 20)], configuration: configuration) { server, _ in
            try await blocking {
                let first = try RawClient(port: server.port)
                try first.greet()
                let second = try RawClient(port: server.port)
                #expect(second.isClosedByServer())
                // The first never finishes its handshake and is dropped after the timeout.
                #expect(first.isClosedByServer())
            }
            try await waitUntil { server.connectionCount == 0 }
            try await Self.expectServerHealthy(server)
        }
    }
}
