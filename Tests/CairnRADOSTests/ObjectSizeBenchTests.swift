import CairnEngine
import CairnIO
import CairnRADOS
import CairnTestSupport
import Foundation
import InteropSupport
import Logging
import Synchronization
import Testing

/// The measurement behind `RadosMedia.defaultObjectSize` (docs/ARCHITECTURE.md, "The pool on RADOS"):
/// a slot file over 64 KiB, 1 MiB and 4 MiB objects under 1 MiB sequential writes, 4 KiB random
/// writes (synced every `RadosSlotFile.maxPendingWrites`) and 4 KiB random reads from 16 threads.
/// Prints the numbers; checks only that what was written reads back. `CAIRN_RADOS_BENCH_SECONDS`
/// (default 1) sets each phase's length; bench/rados.sh runs it longer.
@Suite struct ObjectSizeBenchTests {
    static let span = 64 << 20

    @Test func objectSizes() async throws {
        let seconds = Double(ProcessInfo.processInfo.environment["CAIRN_RADOS_BENCH_SECONDS"] ?? "") ?? 1
        let configuration = try TestCluster.configuration()
        let report = try await blocking { () throws -> [String] in
            var lines: [String] = []
            for objectSize: UInt64 in [64 << 10, 1 << 20, 4 << 20] {
                let io = try RadosCluster(configuration).ioContext()
                let file = try RadosSlotFile(io: io, name: "bench-\(objectSize)", objectSize: objectSize)
                lines.append(try Self.measure(file, objectSize: objectSize, seconds: seconds))
            }
            return lines
        }
        for line in report { print("ObjectSizeBench: \(line)") }
    }

    final class Counters: Sendable {
        let reads = Atomic<Int>(0)
        let failures = Atomic<Int>(0)
    }

    static func measure(_ file: RadosSlotFile, objectSize: UInt64, seconds: Double) throws -> String {
        let block = [UInt8](repeating: 0xA5, count: 1 << 20)
        var start = Date()
        for offset in stride(from: 0, to: span, by: 1 << 20) {
            try block.withUnsafeBytes { try file.write($0, at: UInt64(offset)) }
        }
        try file.sync()
        let sequential = Double(span) / Date().timeIntervalSince(start) / 1e6

        var random = SeededGenerator(seed: 42)
        let small = [UInt8](repeating: 0x5A, count: 4096)
        var writes = 0
        start = Date()
        while Date().timeIntervalSince(start) < seconds {
            let offset = UInt64(Int.random(in: 0..<(span / 4096), using: &random) * 4096)
            try small.withUnsafeBytes { try file.write($0, at: offset) }
            writes += 1
            if writes % RadosSlotFile.maxPendingWrites == 0 { try file.sync() }
        }
        try file.sync()
        let writeIOPS = Double(writes) / Date().timeIntervalSince(start)

        let counters = Counters()
        let readStart = Date()
        let threads = 16
        let group = DispatchGroup()
        for thread in 0..<threads {
            group.enter()
            Thread.detachNewThread {
                var random = SeededGenerator(seed: UInt64(thread))
                var buffer = [UInt8](repeating: 0, count: 4096)
                while Date().timeIntervalSince(readStart) < seconds {
                    let offset = UInt64(Int.random(in: 0..<(span / 4096), using: &random) * 4096)
                    do {
                        try buffer.withUnsafeMutableBytes { try file.read(into: $0, at: offset) }
                        if buffer[0] != 0xA5 && buffer[0] != 0x5A { counters.failures.add(1, ordering: .relaxed) }
                    } catch { counters.failures.add(1, ordering: .relaxed) }
                    counters.reads.add(1, ordering: .relaxed)
                }
                group.leave()
            }
        }
        group.wait()
        let readIOPS = Double(counters.reads.load(ordering: .relaxed)) / Date().timeIntervalSince(readStart)
        #expect(counters.failures.load(ordering: .relaxed) == 0)
        return String(
            format: "objects %4d KiB: 1 MiB sequential write %6.1f MB/s, 4 KiB random write %6.0f IOPS, 4 KiB random read (16 threads) %6.0f IOPS",
            Int(objectSize >> 10), sequential, writeIOPS, readIOPS)
    }
}

/// What a metadata commit costs on RADOS: 4 KiB write + FLUSH on a pool whose metadata lives in the
/// SQLite VFS (exclusive locking, WAL). Prints the mean; checks the data reads back.
@Suite struct CommitLatencyBenchTests {
    @Test func flushAfterA4KiBWrite() async throws {
        let configuration = try TestCluster.configuration()
        let line = try await blocking { () throws -> String in
            let media = try RadosMedia(configuration)
            defer { media.ownership.release() }
            var options = PoolOptions()
            options.commitIntervalNanoseconds = 3_600_000_000_000
            options.logger.logLevel = .warning
            let pool = try Pool(media: media, options: options)
            defer { pool.close() }
            try pool.volumes.create(name: "v", size: 64 << 20, chunkSize: 65536, preserveStore: nil)
            let id = try pool.volumes.id(named: "v")
            let rounds = 30
            let start = Date()
            for round in 0..<rounds {
                let data = [UInt8](repeating: UInt8(round + 1), count: 4096)
                try data.withUnsafeBytes {
                    try pool.write(volumeID: id, offset: UInt64(round) * 65536, source: .bytes($0), fua: false)
                }
                try pool.flush()
            }
            let mean = Date().timeIntervalSince(start) / Double(rounds) * 1000
            var back = [UInt8](repeating: 0, count: 4096)
            _ = try back.withUnsafeMutableBytes { try pool.read(volumeID: id, offset: 5 * 65536, into: $0) }
            #expect(back.allSatisfy { $0 == 6 })
            return String(format: "4 KiB write + FLUSH (data sync + metadata commit): %.1f ms mean over %d", mean, rounds)
        }
        print("CommitLatencyBench: \(line)")
    }
}
