@_spi(Testing) import CairnEngine
import CairnRADOS
import CairnTestSupport
import Foundation
import Glibc
import InteropSupport
import Logging
import Testing

/// The engine's snapshot/COW/clone model on RADOS media: random writes, TRIMs, zeroes, flushes,
/// snapshots, clones, deletions, rollbacks and dedup over several volumes, with restarts that drop
/// everything not committed. Every snapshot must read back exactly as taken; every live volume must
/// hold, sector by sector, a value the block-device contract allows; pool check must stay clean.
@Suite struct RadosPoolModelTests {
    static let sectors = 1024  // 512 KiB volumes
    static let sector = 512

    static func bytes(_ value: UInt32, sector: Int) -> [UInt8] { SectorModel.bytes(value, sector: sector) }

    static func options() -> PoolOptions {
        var options = PoolOptions()
        options.commitIntervalNanoseconds = 3_600_000_000_000
        options.logger.logLevel = .warning
        return options
    }

    @Test(arguments: [65536, 4096])
    func snapshotsClonesAndDedupOnRADOS(chunkSize: Int) async throws {
        let configuration = try TestCluster.configuration()
        for failure in try await blocking({ try Self.run(configuration, chunkSize: UInt32(chunkSize)) }) {
            Issue.record(Comment(rawValue: failure))
        }
    }

    static func run(_ configuration: RadosConfiguration, chunkSize: UInt32) throws -> [String] {
        var failures: [String] = []
        let seed = SeededGenerator.seedFromEnvironment()
        print("RadosPoolModelTests seed \(seed) chunk \(chunkSize)")
        var random = SeededGenerator(seed: seed)
        let context = "seed \(seed) chunk \(chunkSize)"
        // Small objects so that volumes span many of them.
        var media = try RadosMedia(configuration, objectSize: 256 << 10)
        var pool = try Pool(media: media, options: options())
        var live: [String: SectorModel] = [:]
        var snapshots: [String: SectorModel] = [:]
        var origins: [String: String] = [:]
        var nextValue: UInt32 = 1
        var serial = 0
        for name in ["a", "b"] {
            try pool.volumes.create(
                name: name, size: UInt64(sectors * sector), chunkSize: chunkSize, preserveStore: nil)
            live[name] = SectorModel(Array(repeating: 0, count: sectors))
        }

        func verifyAll(_ pool: Pool, afterRestart: Bool, _ what: String) throws -> Bool {
            for (key, image) in snapshots {
                let parts = key.split(separator: "@").map(String.init)
                let got = try pool.sectorImage(volume: parts[0], snapshot: parts[1], sectors: sectors)
                if let bad = image.firstMismatch(in: got, afterCrash: afterRestart) {
                    failures.append("\(context) \(what): snapshot \(key) sector \(bad) changed")
                    return false
                }
            }
            for (name, image) in live {
                let got = try pool.sectorImage(volume: name, snapshot: nil, sectors: sectors)
                if let s = image.firstMismatch(in: got, afterCrash: afterRestart) {
                    failures.append("\(context) \(what): volume \(name) sector \(s) holds \(got[s].prefix(4))")
                    return false
                }
            }
            let report = try pool.checker.check()
            if !report.isHealthy {
                failures.append("\(context) \(what): pool check: \(report.errors)")
                return false
            }
            return true
        }

        for step in 0..<150 {
            let volumes = live.keys.sorted()
            let volume = volumes[Int.random(in: 0..<volumes.count, using: &random)]
            let id = try pool.volumes.id(named: volume)
            let first = Int.random(in: 0..<sectors, using: &random)
            let count = min(sectors - first, Int.random(in: 1...(Bool.random(using: &random) ? 8 : 200), using: &random))
            switch Int.random(in: 0..<100, using: &random) {
            case 0..<45:
                let fua = Int.random(in: 0..<6, using: &random) == 0
                let value = nextValue
                nextValue += 1
                let data = (first..<(first + count)).flatMap { bytes(value, sector: $0) }
                try data.withUnsafeBytes {
                    try pool.write(volumeID: id, offset: UInt64(first * sector), source: .bytes($0), fua: fua)
                }
                for s in first..<(first + count) { live[volume]!.set(s, value, durably: fua) }
            case 45..<55:
                let mode: DiscardMode = Bool.random(using: &random) ? .trim : .zero
                try pool.discard(volumeID: id, offset: UInt64(first * sector), length: UInt64(count * sector), mode: mode)
                let after = try pool.sectorImage(volume: volume, snapshot: nil, sectors: sectors)
                for s in first..<(first + count) where after[s] == bytes(0, sector: s) && live[volume]!.current[s] != 0 {
                    live[volume]!.set(s, 0, durably: false)
                }
            case 55..<65:
                try pool.flush()
                for name in live.keys { live[name]!.flushed() }
                for key in snapshots.keys { snapshots[key]!.flushed() }
            case 65..<73:
                serial += 1
                try pool.snapshots.create(volume: volume, name: "s\(serial)")
                // Not a FLUSH: unflushed writes from before the cut may or may not survive in it.
                snapshots["\(volume)@s\(serial)"] = live[volume]!
            case 73..<78:
                let candidates = snapshots.keys.filter { !origins.values.contains($0) }.sorted()
                guard let key = candidates.randomElement(using: &random) else { continue }
                let parts = key.split(separator: "@").map(String.init)
                try pool.snapshots.delete(volume: parts[0], name: parts[1])
                snapshots[key] = nil
                pool.waitForJobs()
            case 78..<82:
                guard live.count < 5, let key = snapshots.keys.sorted().randomElement(using: &random) else { continue }
                serial += 1
                let parts = key.split(separator: "@").map(String.init)
                try pool.volumes.clone(volume: parts[0], snapshot: parts[1], as: "c\(serial)")
                live["c\(serial)"] = snapshots[key]!
                origins["c\(serial)"] = key
            case 82..<85:
                let own = snapshots.keys.filter { $0.hasPrefix(volume + "@") }.sorted()
                guard let key = own.randomElement(using: &random) else { continue }
                let parts = key.split(separator: "@").map(String.init)
                let epoch = try pool.snapshots.info(volume: volume, name: parts[1]).epoch
                let newer = try pool.snapshots.list(volume: volume).filter { $0.epoch > epoch }
                guard newer.allSatisfy({ $0.clones.isEmpty }) else { continue }
                try pool.snapshots.rollback(volume: volume, to: parts[1], force: true)
                for snapshot in newer { snapshots["\(volume)@\(snapshot.name)"] = nil }
                live[volume] = snapshots[key]!
                pool.waitForJobs()
            case 85..<87:
                try pool.dedup.start()
                pool.waitForJobs()
                if let failed = pool.jobs.list().first(where: { $0.state == .failed }) {
                    failures.append("\(context): dedup failed at step \(step): \(failed.message ?? "")")
                    return failures
                }
            case 87..<92:
                guard try verifyAll(pool, afterRestart: false, "live check at step \(step)") else { return failures }
            default:
                // The process dies between operations (nothing more is committed) and the pool reopens
                // from what RADOS holds.
                pool.waitForJobs()
                pool.simulateProcessDeath()
                media.ownership.release()
                media = try RadosMedia(configuration, objectSize: 256 << 10)
                pool = try Pool(media: media, options: options())
                guard try verifyAll(pool, afterRestart: true, "restart at step \(step)") else { return failures }
                for name in live.keys {
                    let got = try pool.sectorImage(volume: name, snapshot: nil, sectors: sectors)
                    for s in 0..<sectors {
                        live[name]!.current[s] = live[name]!.allowed(s).first { bytes($0, sector: s) == got[s] } ?? 0
                    }
                    live[name]!.flushed()
                }
                for key in snapshots.keys {
                    let parts = key.split(separator: "@").map(String.init)
                    let got = try pool.sectorImage(volume: parts[0], snapshot: parts[1], sectors: sectors)
                    for s in 0..<sectors {
                        snapshots[key]!.current[s] =
                            snapshots[key]!.allowed(s).first { bytes($0, sector: s) == got[s] } ?? snapshots[key]!.current[s]
                    }
                    snapshots[key]!.flushed()
                }
            }
        }
        pool.waitForJobs()
        _ = try verifyAll(pool, afterRestart: false, "final check")
        pool.close()
        media.ownership.release()
        return failures
    }
}
