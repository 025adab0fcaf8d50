@testable import ISCSIServer
import ISCSIProtocol
import NIOCore
import Synchronization
import Testing

/// A logical unit in memory.
final class MemoryUnit: ISCSILogicalUnit {
    let storage: Mutex<[UInt8]>
    let readOnly: Bool
    let identifier: UInt64

    init(size: Int, identifier: UInt64, readOnly: Bool = false, fill: UInt8 = 0) {
        storage = Mutex([UInt8](repeating: fill, count: size))
        self.identifier = identifier
        self.readOnly = readOnly
    }

    var size: UInt64 { UInt64(storage.withLock { $0.count }) }
    var serial: String { "memory-\(identifier)" }
    var bytes: [UInt8] { storage.withLock { $0 } }

    func read(offset: UInt64, length: UInt32, eventLoop: any EventLoop) -> EventLoopFuture<ByteBuffer> {
        eventLoop.makeSucceededFuture(ByteBuffer(bytes: storage.withLock { Array($0[Int(offset)..<Int(offset) + Int(length)]) }))
    }
    func write(offset: UInt64, data: ByteBuffer, fua: Bool, eventLoop: any EventLoop) -> EventLoopFuture<Void> {
        storage.withLock { $0.replaceSubrange(Int(offset)..<Int(offset) + data.readableBytes, with: data.readableBytesView) }
        return eventLoop.makeSucceededVoidFuture()
    }
    func flush(eventLoop: any EventLoop) -> EventLoopFuture<Void> { eventLoop.makeSucceededVoidFuture() }
    func unmap(offset: UInt64, length: UInt64, fua: Bool, eventLoop: any EventLoop) -> EventLoopFuture<Void> {
        write(offset: offset, data: ByteBuffer(repeating: 0, count: Int(length)), fua: fua, eventLoop: eventLoop)
    }
    func writeZeroes(offset: UInt64, length: UInt64, fua: Bool, eventLoop: any EventLoop) -> EventLoopFuture<Void> {
        unmap(offset: offset, length: length, fua: fua, eventLoop: eventLoop)
    }
    func allocation(offset: UInt64, length: UInt64, eventLoop: any EventLoop) -> EventLoopFuture<[ISCSIAllocationExtent]> {
        eventLoop.makeSucceededFuture([ISCSIAllocationExtent(length: length, mapped: true)])
    }
    func compareAndWrite(offset: UInt64, expected: ByteBuffer, data: ByteBuffer, fua: Bool, eventLoop: any EventLoop)
        -> EventLoopFuture<UInt32?>
    {
        write(offset: offset, data: data, fua: fua, eventLoop: eventLoop).map { nil }
    }
    func orWrite(offset: UInt64, data: ByteBuffer, fua: Bool, eventLoop: any EventLoop) -> EventLoopFuture<Void> {
        read(offset: offset, length: UInt32(data.readableBytes), eventLoop: eventLoop).flatMap { stored in
            self.write(offset: offset, data: SCSIOrWrite.combine(stored, with: data), fua: fua, eventLoop: eventLoop)
        }
    }
}

/// Targets by name; EXTENDED COPY finds the others by identifier.
struct MemoryCatalog: ISCSITargetCatalog {
    let units: [String: MemoryUnit]

    func targetNames(initiator: ISCSIInitiatorInfo) -> [String] { units.keys.sorted() }
    func targetExists(_ target: String, initiator: ISCSIInitiatorInfo) -> Bool { units[target] != nil }
    func attach(target: String, initiator: ISCSIInitiatorInfo) throws -> any ISCSILogicalUnit {
        guard let unit = units[target] else { throw ISCSILogicalUnitError(.invalid, "no target \(target)") }
        return unit
    }
    func detach(_ unit: any ISCSILogicalUnit, initiator: ISCSIInitiatorInfo) {}
    func copyUnit(identifier: UInt64, initiator: ISCSIInitiatorInfo) -> (any ISCSILogicalUnit)? {
        units.values.first { $0.identifier == identifier }
    }
}

/// The connection handler with EXTENDED COPY and RECEIVE COPY RESULTS, over an embedded channel: copies
/// between units of one catalog, and the sense data of every refusal the handler (not the parser) makes.
@Suite final class ISCSIExtendedCopyHandlerTests {
    let source = MemoryUnit(size: 1 << 20, identifier: 0x11, fill: 0xA5)
    let destination = MemoryUnit(size: 1 << 20, identifier: 0x22)
    let snapshot = MemoryUnit(size: 1 << 20, identifier: 0x33, readOnly: true)
    var catalog: MemoryCatalog { MemoryCatalog(units: ["src": source, "dst": destination, "snap": snapshot]) }

    /// EXTENDED COPY (LID1) carrying `list`.
    static func extendedCopy(_ list: ByteBuffer, on session: HandlerSession) throws -> ISCSIPDU {
        let length = UInt32(list.readableBytes)
        let cdb: [UInt8] = [0x83, 0, 0, 0, 0, 0, 0, 0, 0, 0] + withUnsafeBytes(of: length.bigEndian) { Array($0) }
        return try session.response(cdb, data: Array(list.readableBytesView))
    }

    static func list(from: UInt64, to: UInt64, blocks: UInt16, source: UInt64 = 0x11, destination: UInt64 = 0x22, id: UInt8 = 7)
        -> ByteBuffer
    {
        ByteBuffer(
            bytes: Array(
                SCSIExtendedCopyTestsList.make(
                    id: id, targets: [source, destination],
                    segment: (0, 1, blocks, from, to)).readableBytesView))
    }

    @Test func aCopyBetweenTwoUnitsIsDoneByTheTargetAndItsStatusKept() throws {
        let session = try HandlerSession(catalog: catalog, target: "dst")
        let done = try Self.extendedCopy(Self.list(from: 8, to: 16, blocks: 64), on: session)
        #expect(senseOf(done).0 == SCSIStatus.good, "\(done)")
        let bytes = destination.bytes
        #expect(bytes[(16 * 512)..<(80 * 512)].allSatisfy { $0 == 0xA5 })
        #expect(bytes[0..<(16 * 512)].allSatisfy { $0 == 0 } && bytes[(80 * 512)...].allSatisfy { $0 == 0 })
        // RECEIVE COPY RESULTS, COPY STATUS of list 7: completed, one segment, 32 KiB.
        let status = try session.response([0x84, 0x00, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 64], expected: 64)
        #expect(status.opcode == .dataIn && status.byte(3) == SCSIStatus.good)
        #expect(Array(status.data.readableBytesView) == [0, 0, 0, 8, 1, 0, 1, 0, 0, 0, 0x80, 0])
        let unknown = try session.response([0x84, 0x00, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 64], expected: 64)
        #expect(senseOf(unknown) == (SCSIStatus.checkCondition, 0x05, 0x24, 0x00))
    }

    @Test func refusalsCarryCopySense() throws {
        let session = try HandlerSession(catalog: catalog, target: "dst")
        // A designator no unit has: COPY ABORTED, COPY TARGET DEVICE NOT REACHABLE.
        var answer = try Self.extendedCopy(Self.list(from: 0, to: 0, blocks: 1, source: 0x99), on: session)
        #expect(senseOf(answer) == (SCSIStatus.checkCondition, 0x0A, 0x0D, 0x02))
        // Past the destination's end: COPY ABORTED.
        answer = try Self.extendedCopy(Self.list(from: 0, to: 2047, blocks: 2), on: session)
        #expect(senseOf(answer) == (SCSIStatus.checkCondition, 0x0A, 0x00, 0x00))
        // Into a read-only unit: DATA PROTECT, WRITE PROTECTED; it keeps its bytes.
        answer = try Self.extendedCopy(Self.list(from: 0, to: 0, blocks: 8, destination: 0x33), on: session)
        #expect(senseOf(answer) == (SCSIStatus.checkCondition, 0x07, 0x27, 0x00))
        #expect(snapshot.bytes.allSatisfy { $0 == 0 })
        #expect(destination.bytes.allSatisfy { $0 == 0 })
        // An empty parameter list copies nothing and is not an error.
        answer = try Self.extendedCopy(ByteBuffer(), on: session)
        #expect(senseOf(answer).0 == SCSIStatus.good)
    }
}

/// A one-segment LID1 list (the layout `SCSIExtendedCopyList.parse` reads).
enum SCSIExtendedCopyTestsList {
    static func make(id: UInt8, targets: [UInt64], segment: (Int, Int, UInt16, UInt64, UInt64)) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.writeInteger(id)
        buffer.writeInteger(UInt8(0))  // LIST ID USAGE 0: results held.
        buffer.writeInteger(UInt16(32 * targets.count))
        buffer.writeInteger(UInt32(0))
        buffer.writeInteger(UInt32(28))
        buffer.writeInteger(UInt32(0))
        for identifier in targets {
            buffer.writeBytes([0xE4, 0, 0, 0, 0x01, 0x03, 0, 8])
            buffer.writeInteger((UInt64(3) << 60) | identifier)
            buffer.writeRepeatingByte(0, count: 12)
            buffer.writeBytes([0, 0, 0x02, 0x00])  // Disk block length 512.
        }
        buffer.writeBytes([0x02, 0, 0, 24])
        buffer.writeInteger(UInt16(segment.0))
        buffer.writeInteger(UInt16(segment.1))
        buffer.writeInteger(UInt16(0))
        buffer.writeInteger(segment.2)
        buffer.writeInteger(segment.3)
        buffer.writeInteger(segment.4)
        return buffer
    }
}
