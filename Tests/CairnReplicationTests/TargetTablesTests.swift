import CairnEngine
import CairnIO
import Foundation
import Logging
import MirrorProtocol
import NIOCore
import Testing

@testable import CairnReplication

/// The target validates management frames against its own tables and answers with typed errors; a
/// refused frame changes nothing.
@Suite("mirror target tables")
struct TargetTablesTests {
    final class Fixture: @unchecked Sendable {
        let directory: String
        let pool: Pool
        let executor = IOExecutor(threadCount: 2, queueCapacity: 64)
        let service: MirrorTargetService

        init() throws {
            directory = NSTemporaryDirectory() + "cairn-target-\(UUID().uuidString)"
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            pool = try Pool.open(directory: directory)
            service = try MirrorTargetService(
                pool: pool, executor: executor, store: MirrorRecordStore(dataDirectory: directory),
                logger: Logger(label: "test"))
        }

        func close() {
            pool.close()
            executor.shutdown()
            try? FileManager.default.removeItem(atPath: directory)
        }

        let connection = ObjectIdentifier(NSObject())

        func send(_ command: MirrorCommand, _ payload: ByteBuffer, flags: MirrorFrameFlags = []) async -> MirrorFrame {
            await service.handle(
                MirrorFrame(command: command, flags: flags, messageID: 1, payload: payload), connection: connection, node: "p")
        }

        func establish(
            _ volume: String, size: UInt64 = 8 << 20, pair: UInt64 = 1, synced: UInt64 = 0,
            options: MirrorEstablishRequest.Options = [.create, .initial]
        ) async -> MirrorFrame {
            await send(
                .establish,
                MirrorEstablishRequest(
                    volume: volume, size: size, chunkSize: 65536,
                    generations: MirrorGenerations(pairID: pair, synced: synced, current: 9), requiredBytes: 0,
                    options: options
                ).payload)
        }
    }

    @Test("unknown volume, size mismatch, bad address, volume in use, diverged")
    func refusals() async throws {
        let f = try Fixture()
        defer { f.close() }
        #expect(await f.establish("nope", options: [.initial]).remoteError()?.code == .unknownVolume)
        #expect(f.pool.volumes.list().isEmpty)
        // Refused by the pairing's own rules after the volume was made for it: the volume goes again.
        let both = await f.establish("dst", options: [.create, .initial, .takeTargetChanges, .discardTargetChanges])
        #expect(both.remoteError()?.code == .invalidArgument, "\(both)")
        #expect(f.pool.volumes.list().isEmpty, "a refused establish left the volume it created")

        let created = await f.establish("dst")
        let reply = try MirrorEstablishReply.decode(payload: created.payload)
        #expect(created.remoteError() == nil && reply.created)
        #expect(f.service.isProtected(volumeID: reply.handle))

        #expect(await f.establish("dst", size: 4 << 20, pair: 2).remoteError()?.code == .sizeMismatch)
        #expect(await f.establish("dst", pair: 2).remoteError()?.code == .volumeInUse)

        // A write past the end, and a handle this connection does not own.
        let past = MirrorWriteHeader.payload(handle: reply.handle, offset: 8 << 20, data: ByteBuffer(bytes: [1]))
        #expect(await f.send(.write, past).remoteError()?.code == .badAddress)
        let stranger = MirrorWriteHeader.payload(handle: reply.handle + 1000, offset: 0, data: ByteBuffer(bytes: [1]))
        #expect(await f.send(.write, stranger).remoteError()?.code == .badAddress)
        // A good write, then the frame size range.
        let good = MirrorWriteHeader.payload(handle: reply.handle, offset: 4096, data: ByteBuffer(bytes: [UInt8](repeating: 7, count: 4096)))
        #expect(await f.send(.write, good, flags: .fua).remoteError() == nil)
        #expect(await f.send(.setFrameSize, MirrorHandleValue(handle: reply.handle, value: 1).payload).remoteError()?.code == .invalidArgument)
        #expect(await f.send(.status, ByteBuffer()).remoteError() == nil)

        // Severed, then written by a host: re-establishing the same pair is refused as diverged.
        #expect(await f.send(.sever, MirrorHandleValue(handle: reply.handle).payload).remoteError() == nil)
        #expect(!f.service.isProtected(volumeID: reply.handle))
        try f.service.beforeHostWrite(volumeID: reply.handle, offset: 0, length: 4096)
        #expect(await f.establish("dst", options: [.create]).remoteError()?.code == .targetChanged)
        #expect(await f.establish("dst", options: [.create, .discardTargetChanges]).remoteError() == nil)

        // A generation the target never held is a divergence too.
        #expect(await f.establish("dst", synced: 42, options: [.create]).remoteError()?.code == .diverged)
        // Malformed payloads are protocol violations, not crashes.
        #expect(await f.send(.establish, ByteBuffer(bytes: [1, 2])).remoteError()?.code == .protocolViolation)
    }
}

@Suite("mirror target data frames")
struct TargetDataFramesTests {
    /// The primary never has two overlapping frames in flight (the overlap gate), so frames that arrive
    /// reordered or twice (a retransmission whose original did arrive) leave the same bytes.
    @Test("reordered and duplicated frames apply to the same result")
    func reorderAndDuplicate() async throws {
        let f = try TargetTablesTests.Fixture()
        defer { f.close() }
        let handle = try MirrorEstablishReply.decode(payload: await f.establish("dst").payload).handle
        func write(_ offset: UInt64, _ byte: UInt8) -> ByteBuffer {
            MirrorWriteHeader.payload(handle: handle, offset: offset, data: ByteBuffer(bytes: [UInt8](repeating: byte, count: 8192)))
        }
        // Sent as A (0x11 at 0), B (0x22 at 8K), C (zeroes at 16K); delivered B, A, C, A, B.
        let c = MirrorRange(handle: handle, offset: 16384, length: 8192).payload
        for (command, payload) in [(MirrorCommand.write, write(8192, 0x22)), (.write, write(0, 0x11)), (.writeZeroes, c),
            (.write, write(0, 0x11)), (.write, write(8192, 0x22))]
        {
            #expect(await f.send(command, payload).remoteError() == nil)
        }
        #expect(await f.send(.flush, MirrorHandleValue(handle: handle).payload).remoteError() == nil)
        var bytes = [UInt8](repeating: 0xFF, count: 24576)
        _ = try bytes.withUnsafeMutableBytes { try f.pool.read(volumeID: handle, offset: 0, into: $0) }
        #expect(bytes[0..<8192].allSatisfy { $0 == 0x11 })
        #expect(bytes[8192..<16384].allSatisfy { $0 == 0x22 })
        #expect(bytes[16384...].allSatisfy { $0 == 0 })
    }
}
