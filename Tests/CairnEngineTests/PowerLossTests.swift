@_spi(Testing) import CairnEngine
import CairnTestSupport
import InteropSupport
import Glibc
import Synchronization
import Testing

@Suite struct PowerLossTests {
    static let volumeSize = 4 << 20

    /// Random writes, FUA writes, TRIMs, WRITE_ZEROES and FLUSHes, with power cuts between operations and
    /// crash images taken at the instant a metadata commit becomes durable. Every image must reopen
    /// without repair, pass `pool check`, and hold only values the contract allows.
    @Test(arguments: [65536, 4096, 1 << 20])
    func acknowledgedFlushedDataSurvivesPowerLoss(chunkSize: Int) async throws {
        // Runs on its own thread; failures come back as text and are recorded here, in the test's task.
        for failure in try await blocking({ Self.powerLossRun(chunkSize: chunkSize) }) {
            Issue.record(Comment(rawValue: failure))
        }
    }

    static func powerLossRun(chunkSize: Int) -> [String] {
        SeededGenerator.modelFailures("chunk \(chunkSize)") { try powerLossRun(chunkSize: chunkSize, seed: $0) }
    }

    static func powerLossRun(chunkSize: Int, seed: UInt64) throws -> [String] {
        var failures: [String] = []
        var random = SeededGenerator(seed: seed)
        var media = SimulatedMedia()
        var pool = try Pool(media: media, options: testOptions())
        let volume = try pool.volumes.create(name: "v", size: UInt64(Self.volumeSize), chunkSize: UInt32(chunkSize)).id
        var model = SectorModel(sectors: Self.volumeSize / SectorModel.sector)
        var nextValue: UInt32 = 1
        var immediateWrites = 0
        let captured = Mutex<SimulatedMedia?>(nil)
        let commitRandom = Mutex(SeededGenerator(seed: seed ^ 0xC0FFEE))

        func installCommitHook(_ media: SimulatedMedia) {
            media.store.setAfterCommit { [media] in
                commitRandom.withLock { rng in
                    guard Int.random(in: 0..<3, using: &rng) == 0 else { return }
                    let image = media.crashImage(using: &rng)
                    captured.withLock { $0 = image }
                }
            }
        }
        installCommitHook(media)

        func verify(_ image: SimulatedMedia, _ what: String) throws -> Pool {
            let reopened = try Pool(media: image, options: testOptions())
            let report = try reopened.checker.check()
            if !report.isHealthy { failures.append("seed \(seed) chunk \(chunkSize) \(what): \(report.errors)") }
            let id = try reopened.volumes.id(named: "v")
            let bytes = try readBytes(reopened, id, 0, Self.volumeSize)
            for sector in 0..<model.current.count {
                let got = Array(bytes[(sector * SectorModel.sector)..<((sector + 1) * SectorModel.sector)])
                let ok = model.allowed(sector).contains { SectorModel.bytes($0, sector: sector) == got }
                if !ok {
                    failures.append(
                        "seed \(seed) chunk \(chunkSize) \(what): sector \(sector) holds \(got.prefix(8)), allowed values \(model.allowed(sector))")
                    break
                }
            }
            return reopened
        }

        func verifyCapturedImage(_ what: String) throws {
            guard let image = captured.withLock({ $0 }) else { return }
            captured.withLock { $0 = nil }
            try verify(image, what).close()
        }

        let trace = getenv("CAIRN_TRACE") != nil
        for step in 0..<300 {
            let sectors = model.current.count
            let first = Int.random(in: 0..<sectors, using: &random)
            let count = min(sectors - first, Int.random(in: 1...(Int.random(in: 0..<4, using: &random) == 0 ? 512 : 24), using: &random))
            let op = Int.random(in: 0..<20, using: &random)
            if trace { print("step \(step) op \(op) first \(first) count \(count)") }
            switch op {
            case 0..<10:
                let fua = Int.random(in: 0..<5, using: &random) == 0
                // Whole 4 KiB blocks now and then, so that overwrites can take the immediate path.
                let blocks = Int.random(in: 0..<3, using: &random) == 0
                let first = blocks ? first / 8 * 8 : first
                let count = blocks ? min(sectors - first, max(8, count / 8 * 8)) : count
                let value = nextValue
                nextValue += 1
                var data: [UInt8] = []
                for s in first..<(first + count) { data += SectorModel.bytes(value, sector: s) }
                let offset = UInt64(first * SectorModel.sector)
                let immediate = try !fua && data.withUnsafeBytes {
                    try pool.writeIfImmediate(volumeID: volume, offset: offset, bytes: $0)
                }
                if immediate {
                    immediateWrites += 1
                } else {
                    try writeBytes(pool, volume, offset, data, fua: fua)
                }
                for s in first..<(first + count) { model.set(s, value) }
                // A FUA write commits: an image taken then may or may not hold this write.
                try verifyCapturedImage("commit image during FUA write at step \(step)")
                if fua { for s in first..<(first + count) { model.set(s, value, durably: true) } }
            case 10..<12:
                try pool.discard(
                    volumeID: volume, offset: UInt64(first * SectorModel.sector),
                    length: UInt64(count * SectorModel.sector), mode: .trim)
                // TRIM frees whole 4 KiB sub-blocks only: re-read to learn which sectors became zero.
                let after = try readBytes(pool, volume, UInt64(first * SectorModel.sector), count * SectorModel.sector)
                for s in first..<(first + count) where after[((s - first) * SectorModel.sector)..<((s - first + 1) * SectorModel.sector)].allSatisfy({ $0 == 0 }) && model.current[s] != 0 {
                    model.set(s, 0)
                }
            case 12..<14:
                let punch = Bool.random(using: &random)
                if punch {
                    try pool.discard(
                        volumeID: volume, offset: UInt64(first * SectorModel.sector),
                        length: UInt64(count * SectorModel.sector), mode: .zero)
                } else {
                    try pool.write(
                        volumeID: volume, offset: UInt64(first * SectorModel.sector),
                        source: .zeros(length: UInt64(count * SectorModel.sector)), fua: false)
                }
                for s in first..<(first + count) { model.set(s, 0) }
            case 14..<17:
                try pool.flush()
                // Taken during this flush: only guarantees from before it apply.
                try verifyCapturedImage("commit image during FLUSH at step \(step)")
                model.flushed()
            default:
                // Power cut: the process dies without committing; reopen from what the disk kept.
                let image = media.crashImage(using: &random)
                pool.simulateProcessDeath()
                pool = try verify(image, "power cut at step \(step)")
                media = pool.media as! SimulatedMedia
                installCommitHook(media)
                let bytes = try readBytes(pool, volume, 0, Self.volumeSize)
                for s in 0..<sectors {
                    let got = Array(bytes[(s * SectorModel.sector)..<((s + 1) * SectorModel.sector)])
                    model.current[s] = model.allowed(s).first { SectorModel.bytes($0, sector: s) == got } ?? 0
                }
                model.flushed()
            }
            // The live view always matches the model exactly.
            if step % 25 == 0 {
                let bytes = try readBytes(pool, volume, 0, Self.volumeSize)
                for s in 0..<sectors
                where Array(bytes[(s * SectorModel.sector)..<((s + 1) * SectorModel.sector)])
                    != SectorModel.bytes(model.current[s], sector: s)
                {
                    failures.append("seed \(seed) chunk \(chunkSize): live sector \(s) differs from the model at step \(step)")
                    break
                }
            }
        }
        pool.close()
        // The immediate path must have been tested here, not only skipped.
        if immediateWrites == 0 { failures.append("seed \(seed) chunk \(chunkSize): no write took the immediate path") }
        return failures
    }
}
