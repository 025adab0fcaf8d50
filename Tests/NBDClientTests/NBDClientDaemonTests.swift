import Foundation
import InteropSupport
import NBDClient
import NBDProtocol
import NIOCore
import Testing

extension TestDaemon {
    /// A client connected to volume `name`.
    func client(_ name: String, contexts: [String] = []) async throws -> NBDClient {
        try await NBDClient.connect(to: NBDURI(parsing: uri(name)), metaContexts: contexts)
    }
}

/// NBDClient against a real `cairn serve`: the standard commands, then COPY_AND_WRITE.
@Suite("NBD client against the daemon")
struct NBDClientDaemonTests {
    static let chunk: UInt64 = 64 * 1024

    @Test("negotiation: size, flags, block sizes and the contexts a live volume offers")
    func negotiation() async throws {
        try await withDaemon { daemon in
            try await daemon.cliOK(["volume", "create", "disk", "16M"])
            let client = try await daemon.client(
                "disk", contexts: ["base:allocation", NBDCopyOnWrite.contextName, "x-unknown:thing"])
            #expect(client.size == 16 << 20)
            #expect(
                client.flags.isSuperset(of: [
                    .hasFlags, .sendFlush, .sendFUA, .sendTrim, .sendWriteZeroes, .canMultiConn,
                ]))
            #expect(client.session.blockSizes.minimum == 512)
            #expect(client.session.metaContexts.map(\.name) == ["base:allocation", NBDCopyOnWrite.contextName])
            #expect(client.supportsCopyAndWrite)
            await client.disconnect()
            do {
                _ = try await client.read(offset: 0, length: 512)
                Issue.record("read after disconnect")
            } catch let error as NBDClientError {
                #expect(error == .connectionClosed)
            }
            do {
                _ = try await daemon.client("missing")
                Issue.record("connected to a missing export")
            } catch NBDClientError.negotiationFailed(let failure) {
                #expect(failure.refusedOption == .go && failure.reply == .errorUnknown, "\(failure)")
            }
            // The server is fine after a refused GO (the client ended it with NBD_OPT_ABORT).
            let again = try await daemon.client("disk")
            #expect(again.size == 16 << 20)
            await again.disconnect()
        }
    }

    @Test("read, write, flush, trim, write zeroes and block status round trips, pipelined")
    func roundTrips() async throws {
        try await withDaemon { daemon in
            try await daemon.cliOK(["volume", "create", "disk", "16M"])
            let client = try await daemon.client("disk", contexts: ["base:allocation"])
            // 32 writes in flight at once, then 32 reads, each checked.
            try await withThrowingTaskGroup(of: Void.self) { group in
                for index in 0..<32 {
                    group.addTask {
                        try await client.write(
                            offset: UInt64(index) * 65536, data: ByteBuffer(repeating: UInt8(index + 1), count: 4096))
                    }
                }
                try await group.waitForAll()
            }
            try await client.flush()
            try await withThrowingTaskGroup(of: (Int, ByteBuffer).self) { group in
                for index in 0..<32 {
                    group.addTask { (index, try await client.read(offset: UInt64(index) * 65536, length: 8192)) }
                }
                for try await (index, data) in group {
                    let bytes = Array(data.readableBytesView)
                    #expect(
                        bytes[..<4096].allSatisfy { $0 == UInt8(index + 1) } && bytes[4096...].allSatisfy { $0 == 0 })
                }
            }
            try await client.write(offset: 1 << 20, data: ByteBuffer(repeating: 9, count: 65536), fua: true)
            try await client.writeZeroes(offset: 1 << 20, length: 4096)
            try await client.trim(offset: (1 << 20) + 32768, length: 32768)
            let data = try await client.read(offset: 1 << 20, length: 65536)
            #expect(data.readableBytesView.prefix(4096).allSatisfy { $0 == 0 })
            #expect(data.readableBytesView.dropFirst(4096).prefix(28672).allSatisfy { $0 == 9 })

            let extents = try await client.blockStatus(offset: 8 << 20, length: 8 << 20)
            #expect(extents.first?.flags == NBDAllocationState([.hole, .zero]).rawValue, "\(extents)")
            let written = try await client.blockStatus(offset: 0, length: 4096)
            #expect(written.first?.flags == 0)

            // Checked here, never sent: proto.md's constraints are the client's to honour.
            await #expect(throws: NBDClientError.self) { _ = try await client.read(offset: 100, length: 512) }
            await #expect(throws: NBDClientError.self) { _ = try await client.read(offset: 16 << 20, length: 512) }
            await #expect(throws: NBDClientError.self) {
                _ = try await client.blockStatus(context: NBDCopyOnWrite.contextName, offset: 0, length: 512)
            }
            let stats = client.statistics
            #expect(stats.requests == 32 + 1 + 32 + 6 && stats.bytesSent > 32 * 4096)
            await client.disconnect()
        }
    }

    @Test("COPY_AND_WRITE: target = source + buffer, source and snapshot unchanged, target no longer shared")
    func copyAndWrite() async throws {
        try await withDaemon { daemon in
            try await daemon.cliOK(["volume", "create", "vol", "16M", "--chunk-size", "64K"])
            let client = try await daemon.client("vol", contexts: [NBDCopyOnWrite.contextName])
            let chunk = Self.chunk
            try await client.write(offset: 0, data: ByteBuffer(repeating: 0xaa, count: Int(chunk)))
            try await client.write(offset: 4 * chunk, data: ByteBuffer(repeating: 0xbb, count: Int(chunk)))
            try await client.flush()
            try await daemon.cliOK(["snapshot", "create", "vol@before"])

            let shared = try await client.copyOnWriteStatus(offset: 0, length: 8 * chunk)
            #expect(
                shared.first?.flags == NBDCopyOnWriteState.shared.rawValue && shared.first?.length == chunk, "\(shared)"
            )

            let before = client.statistics
            try await client.copyAndWrite(
                source: 0, target: 4 * chunk, copySize: UInt32(chunk), buffer: ByteBuffer(repeating: 0xcc, count: 8192),
                bufferOffset: 16384, fua: true)
            let cost = client.statistics.since(before)
            #expect(cost.requests == 1 && cost.bytesSent == 28 + 16 + 8192 && cost.bytesReceived == 16, "\(cost)")

            let target = Array(try await client.read(offset: 4 * chunk, length: Int(chunk)).readableBytesView)
            #expect(target[..<16384].allSatisfy { $0 == 0xaa } && target[16384..<24576].allSatisfy { $0 == 0xcc })
            #expect(target[24576...].allSatisfy { $0 == 0xaa })
            #expect(try await client.read(offset: 0, length: Int(chunk)).readableBytesView.allSatisfy { $0 == 0xaa })

            let status = try await client.copyOnWriteStatus(offset: 4 * chunk, length: chunk)
            #expect(status.first?.flags == 0 && status.first?.length == chunk, "the map says: no further COW")
            let source = try await client.copyOnWriteStatus(offset: 0, length: chunk)
            #expect(source.first?.flags == NBDCopyOnWriteState.shared.rawValue, "the source is still the snapshot's")

            let snapshot = try await daemon.client("vol@before", contexts: [NBDCopyOnWrite.contextName])
            #expect(!snapshot.supportsCopyAndWrite, "snapshots are read-only and do not offer the context")
            #expect(
                try await snapshot.read(offset: 4 * chunk, length: Int(chunk)).readableBytesView.allSatisfy {
                    $0 == 0xbb
                })
            await #expect(throws: NBDClientError.self) {
                try await snapshot.copyAndWrite(
                    source: 0, target: 0, copySize: UInt32(chunk), buffer: ByteBuffer(repeating: 1, count: 512),
                    bufferOffset: 0)
            }
            await snapshot.disconnect()

            // The engine's copy size is the volume's chunk size; the server says so.
            do {
                try await client.copyAndWrite(
                    source: 0, target: 8 * chunk, copySize: 32768, buffer: ByteBuffer(repeating: 1, count: 512),
                    bufferOffset: 0)
                Issue.record("a copy size other than the chunk size was accepted")
            } catch NBDClientError.commandFailed(let command, let error, let message) {
                #expect(command == .cairnCopyAndWrite && error == .invalid && message.contains("65536"), "\(message)")
            }
            // Source == target: the shared chunk is unshared in place, as a host-side COW would.
            try await client.copyAndWrite(
                source: 0, target: 0, copySize: UInt32(chunk), buffer: ByteBuffer(repeating: 0xdd, count: 512),
                bufferOffset: 0)
            #expect(try await client.copyOnWriteStatus(offset: 0, length: chunk).first?.flags == 0)
            let snapshotAgain = try await daemon.client("vol@before")
            #expect(try await snapshotAgain.read(offset: 0, length: 512).readableBytesView.allSatisfy { $0 == 0xaa })
            await snapshotAgain.disconnect()
            await client.disconnect()
        }
    }
}
