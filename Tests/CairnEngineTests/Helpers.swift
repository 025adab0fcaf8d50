import CairnEngine
import CairnTestSupport
import Foundation
import Logging

/// Reads `length` bytes of a volume into an array.
func readBytes(_ pool: Pool, _ volume: UInt64, _ offset: UInt64, _ length: Int) throws -> [UInt8] {
    var bytes = [UInt8](repeating: 0xEE, count: length)
    _ = try bytes.withUnsafeMutableBytes { try pool.read(volumeID: volume, offset: offset, into: $0) }
    return bytes
}

func writeBytes(_ pool: Pool, _ volume: UInt64, _ offset: UInt64, _ bytes: [UInt8], fua: Bool = false) throws {
    try bytes.withUnsafeBytes { try pool.write(volumeID: volume, offset: offset, source: .bytes($0), fua: fua) }
}

func pattern(_ seed: UInt8, _ count: Int) -> [UInt8] {
    (0..<count).map { UInt8(truncatingIfNeeded: Int(seed) &* 31 &+ $0 &* 7) }
}

/// A fresh directory under the system temp dir, removed by the caller.
func temporaryDirectory() -> String {
    let path = NSTemporaryDirectory() + "cairn-test-" + UUID().uuidString
    try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

/// Options for tests: no timer commits, so a test controls exactly when commits happen.
func testOptions() -> PoolOptions {
    var options = PoolOptions()
    options.commitIntervalNanoseconds = 3_600_000_000_000
    options.logger.logLevel = .warning
    // Small, so that checkpoints, waits for room and wrap-arounds happen within a test's few hundred commits.
    options.journalCapacity = 64 << 10
    // A preempted test thread must not close the immediate path: whether a write is immediate depends
    // only on the pool's state here.
    options.immediateWriteStallLimit = .seconds(3600)
    return options
}
