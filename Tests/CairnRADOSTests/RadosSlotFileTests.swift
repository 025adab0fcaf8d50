import CairnIO
import CairnRADOS
import CairnTestSupport
import Foundation
import InteropSupport
import Testing

/// A slot file striped over RADOS objects behaves as a sparse file: compared with a byte model under
/// random writes, zeroes, punches and truncations across object boundaries, and across reopening.
@Suite struct RadosSlotFileTests {
    static let objectSize: UInt64 = 64 << 10

    @Test func randomOperationsMatchAByteModel() throws {
        let seed = SeededGenerator.seedFromEnvironment()
        print("RadosSlotFileTests seed \(seed)")
        var random = SeededGenerator(seed: seed)
        let io = try RadosCluster(try TestCluster.configuration()).ioContext()
        var file = try RadosSlotFile(io: io, name: "slots", objectSize: Self.objectSize)
        let span = Int(Self.objectSize) * 5
        var model: [UInt8] = []
        for step in 0..<300 {
            let offset = Int.random(in: 0..<span, using: &random)
            let length = min(span - offset, Int.random(in: 1...(Int(Self.objectSize) * 2), using: &random))
            switch Int.random(in: 0..<10, using: &random) {
            case 0..<6:
                let data = (0..<length).map { _ in UInt8.random(in: 1...255, using: &random) }
                try data.withUnsafeBytes { try file.write($0, at: UInt64(offset)) }
                if model.count < offset + length { model += [UInt8](repeating: 0, count: offset + length - model.count) }
                model.replaceSubrange(offset..<offset + length, with: data)
            case 6:
                try file.punchHole(at: UInt64(offset), length: UInt64(length))
                let end = min(model.count, offset + length)
                if end > offset { model.replaceSubrange(offset..<end, with: [UInt8](repeating: 0, count: end - offset)) }
            case 7:
                try file.zeroRange(at: UInt64(offset), length: UInt64(length))
                if model.count < offset + length { model += [UInt8](repeating: 0, count: offset + length - model.count) }
                model.replaceSubrange(offset..<offset + length, with: [UInt8](repeating: 0, count: length))
            case 8:
                try file.sync()
                file = try RadosSlotFile(io: io, name: "slots", objectSize: Self.objectSize)
            default:
                try file.truncate(to: UInt64(offset))
                model = Array(model.prefix(offset)) + [UInt8](repeating: 0, count: max(0, offset - model.count))
            }
            #expect(try file.size() == UInt64(model.count), "seed \(seed) step \(step)")
            var back = [UInt8](repeating: 0xEE, count: span)
            try back.withUnsafeMutableBytes { try file.read(into: $0, at: 0) }
            let expected = model + [UInt8](repeating: 0, count: span - model.count)
            guard back == expected else {
                let first = (0..<span).first { back[$0] != expected[$0] }!
                Issue.record("seed \(seed) step \(step): byte \(first) is \(back[first]), expected \(expected[first])")
                return
            }
        }
        try file.sync()
        #expect(try file.allocatedBytes() <= UInt64(model.count))
    }

    @Test func unsyncedGrowthIsCutAwayAtReopen() throws {
        let io = try RadosCluster(try TestCluster.configuration()).ioContext()
        let file = try RadosSlotFile(io: io, name: "slots", objectSize: Self.objectSize)
        let data = [UInt8](repeating: 7, count: 100_000)
        try data.withUnsafeBytes { try file.write($0, at: 0) }
        try file.sync()
        // Written but never synced: a crash now leaves objects past the recorded length.
        try data.withUnsafeBytes { try file.write($0, at: 300_000) }
        let reopened = try RadosSlotFile(io: io, name: "slots", objectSize: Self.objectSize)
        #expect(try reopened.size() == 100_000)
        var back = [UInt8](repeating: 0xEE, count: 400_000)
        try back.withUnsafeMutableBytes { try reopened.read(into: $0, at: 0) }
        #expect(back[..<100_000].allSatisfy { $0 == 7 })
        #expect(back[100_000...].allSatisfy { $0 == 0 })
        #expect(try reopened.nextData(from: 100_000) == nil)
        #expect(try reopened.nextData(from: 0) == 0)
    }

    /// A punched range inside an object still exists but holds no data (pool check counts a free slot
    /// that holds data as leaked).
    @Test func nextDataSkipsZeroedRangesInsideObjects() throws {
        let io = try RadosCluster(try TestCluster.configuration()).ioContext()
        let file = try RadosSlotFile(io: io, name: "slots", objectSize: Self.objectSize)
        let data = [UInt8](repeating: 9, count: 200_000)
        try data.withUnsafeBytes { try file.write($0, at: 0) }
        try file.punchHole(at: 70_000, length: 10_000)
        try file.punchHole(at: 131_072, length: 65536)
        try file.sync()
        #expect(try file.nextData(from: 0) == 0)
        #expect(try file.nextData(from: 70_000) == 80_000)
        #expect(try file.nextData(from: 131_072) == 196_608)
        #expect(try file.nextData(from: 200_000) == nil)
        // What was read as zeros is forgotten once the file changes.
        try data.withUnsafeBytes { try file.write(UnsafeRawBufferPointer(rebasing: $0[0..<10]), at: 72_000) }
        #expect(try file.nextData(from: 70_000) == 72_000)
    }

    @Test func copyBetweenFiles() throws {
        let io = try RadosCluster(try TestCluster.configuration()).ioContext()
        let a = try RadosSlotFile(io: io, name: "a", objectSize: Self.objectSize)
        let b = try RadosSlotFile(io: io, name: "b", objectSize: Self.objectSize)
        let data = (0..<200_000).map { UInt8(truncatingIfNeeded: $0 &* 13) }
        try data.withUnsafeBytes { try a.write($0, at: 1000) }
        #expect(try b.copy(from: a, at: 1000, to: 50_000, length: 200_000) == .userspace)
        try b.sync()
        var back = [UInt8](repeating: 0, count: 200_000)
        try back.withUnsafeMutableBytes { try b.read(into: $0, at: 50_000) }
        #expect(back == data)
    }

    @Test func aFencedFileFailsItsSync() throws {
        let configuration = try TestCluster.configuration()
        let mine = try RadosCluster(configuration)
        let file = try RadosSlotFile(io: try mine.ioContext(), name: "slots", objectSize: Self.objectSize)
        let other = try RadosCluster(configuration)
        try other.blocklist(address: try mine.address())
        // An OSD learns of the blocklist from the next operation that carries the new map (a successor's
        // first I/O, as here), or from the monitors soon after.
        _ = try other.ioContext().size(of: "slots.meta")
        let data = [UInt8](repeating: 1, count: 4096)
        // The write may be refused at submission or at its acknowledgement; sync reports it either way.
        let error = #expect(throws: IOError.self) {
            try data.withUnsafeBytes { try file.write($0, at: 0) }
            try file.sync()
        }
        #expect(error?.errno == ESHUTDOWN)
        // And stays refused: nothing of a fenced client reaches the pool.
        #expect(throws: IOError.self) {
            try data.withUnsafeBytes { try file.write($0, at: 8192) }
            try file.sync()
        }
    }
}
