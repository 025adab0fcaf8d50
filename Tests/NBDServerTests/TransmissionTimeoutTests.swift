import Foundation
import InteropSupport
import NBDProtocol
import NBDServer
import NIOCore
import Testing

/// The transmission-phase timeouts against a real server and a raw socket: a client that stalls inside
/// a message, or sits idle, loses its connection; a client waiting for its own request does not.
@Suite("transmission timeouts", .serialized)
struct TransmissionTimeoutTests {
    /// Short timeouts so the tests run fast; the raw client's own receive timeout (10 s) is far above.
    static func configuration(idle: Duration?, progress: Duration?) -> NBDServerConfiguration {
        var configuration = NBDServerConfiguration(port: 0)
        configuration.transmissionTimeouts = .init(idle: idle, payloadProgress: progress)
        return configuration
    }

    @Test("a WRITE header followed by part of its payload and then nothing is closed, and the session detached")
    func stalledPayload() async throws {
        let export = MemoryExport(name: "disk", size: 4 << 20)
        let logs = LogCapture()
        try await withServer([export], configuration: Self.configuration(idle: nil, progress: .milliseconds(300)), logs: logs) {
            server, catalog in
            try await blocking {
                let client = try RawClient(port: server.port, timeout: 10)
                try client.handshake(export: "disk")
                try client.sendRequest(.write, cookie: 1, offset: 0, length: 1 << 20, payload: RawProtocolTests.payload(1, 4096))
                #expect(client.isClosedByServer())
            }
            try await waitUntil { catalog.detachCount == 1 }
            #expect(export.counters.writes == 0)
            #expect(logs.records.contains { $0.message.contains("stalled") && "\($0.metadata)".contains("no progress") })
            try await RawProtocolTests.expectServerHealthy(server)
        }
    }

    @Test("a bare request header (no payload yet) is a partial message too")
    func stalledHeader() async throws {
        let export = MemoryExport(name: "disk", size: 4 << 20)
        try await withServer([export], configuration: Self.configuration(idle: nil, progress: .milliseconds(300))) {
            server, catalog in
            try await blocking {
                let client = try RawClient(port: server.port, timeout: 10)
                try client.handshake(export: "disk")
                var half = ByteBuffer()
                half.writeInteger(NBDMagic.request)
                half.writeInteger(UInt16(0))
                try client.send(half)
                #expect(client.isClosedByServer())
            }
            try await waitUntil { catalog.detachCount == 1 }
        }
    }

    @Test("an idle connection is closed after the idle timeout once its requests are answered")
    func idleConnection() async throws {
        let export = MemoryExport(name: "disk", size: 4 << 20)
        try await withServer([export], configuration: Self.configuration(idle: .milliseconds(300), progress: nil)) {
            server, catalog in
            try await blocking {
                let client = try RawClient(port: server.port, timeout: 10)
                try client.handshake(export: "disk", structured: false, metaContext: false)
                try client.sendRequest(.write, cookie: 7, offset: 0, length: 4096, payload: RawProtocolTests.payload(3, 4096))
                let reply = try client.receiveSimpleReply()
                #expect(reply.cookie == 7 && reply.error == 0)
                #expect(client.isClosedByServer())
            }
            try await waitUntil { catalog.detachCount == 1 }
            #expect(export.contents(offset: 0, length: 1) == [3])
        }
    }

    @Test("a request the export is still running keeps the connection however long it takes")
    func runningRequestHasNoDeadline() async throws {
        let export = MemoryExport(name: "disk", size: 4 << 20)
        let logs = LogCapture()
        try await withServer([export], configuration: Self.configuration(idle: .milliseconds(200), progress: .milliseconds(200)), logs: logs) {
            server, catalog in
            export.hold(.write)
            let client = try await blocking { () -> RawClient in
                let client = try RawClient(port: server.port, timeout: 10)
                try client.handshake(export: "disk", structured: false, metaContext: false)
                try client.sendRequest(.write, cookie: 9, offset: 0, length: 4096, payload: RawProtocolTests.payload(4, 4096))
                return client
            }
            try await waitUntil { export.heldCount == 1 }
            // A second connection that idles is closed meanwhile: proof that the timers run.
            try await blocking {
                let idle = try RawClient(port: server.port, timeout: 10)
                try idle.handshake(export: "disk")
                #expect(idle.isClosedByServer())
            }
            // The idle one is detached; the one waiting for its write is not.
            try await waitUntil { catalog.detachCount == 1 }
            #expect(catalog.attachedSessions == 1)
            export.release()
            try await blocking {
                let reply = try client.receiveSimpleReply()
                #expect(reply.cookie == 9 && reply.error == 0)
            }
        }
    }
}
