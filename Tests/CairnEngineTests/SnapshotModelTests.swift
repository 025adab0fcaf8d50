@_spi(Testing) import CairnEngine
import CairnTestSupport
import InteropSupport
import Foundation
import Glibc
import Synchronization
import Testing

/// The dm test suite's "pattern stomper", generalised: random writes, TRIMs, zeroes, flushes, snapshots,
/// clones, snapshot deletions (with reclaim) and rollbacks over several volumes, with power cuts in
/// between. Every snapshot must read back exactly as it was taken, forever; every live volume must hold,
/// sector by sector, a value the block-device contract allows.
@Suite struct SnapshotModelTests {
    static let sectors = 2048  // 1 MiB volumes
    static let sector = 512

    struct Model {
        var live: [String: SectorModel] = [:]
        /// "volume@snapshot" → its content: a snapshot is not a FLUSH, so writes from before its cut that
        /// no FLUSH covered yet may or may not survive a power cut in it, as in the volume.
        var snapshots: [String: SectorModel] = [:]
        /// clone name → "volume@snapshot" it came from (the snapshot cannot be deleted meanwhile).
        var origins: [String: String] = [:]

        mutating func flushedAll() {
            for name in live.keys { live[name]!.flushed() }
            for key in snapshots.keys { snapshots[key]!.flushed() }
        }
    }

    static func bytes(_ value: UInt32, sector: Int) -> [UInt8] { SectorModel.bytes(value, sector: sector) }

    /// Operations per run; `scripts/soak` raises it (with several seeds) for the long runs.
    static let steps = Int(ProcessInfo.processInfo.environment["CAIRN_MODEL_STEPS"] ?? "") ?? 400

    @Test(arguments: [65536, 4096, 1 << 20])
    func snapshotsNeverChangeAcrossPowerLoss(chunkSize: Int) async throws {
        // Runs on its own thread; failures come back as text and are recorded here, in the test's task.
        for failure in try await blocking({ Self.run(chunkSize: UInt32(chunkSize)) }) {
            Issue.record(Comment(rawValue: failure))
        }
    }

    /// Every data block of every version in the pool must match its checksum: the scrub's verdict as
    /// text, or nil when it found nothing. Run after each recovery and each live check, so that a block
    /// left with a stale checksum is caught where it appears, not when a later write happens to read it.
    static func checksumDamage(_ pool: Pool) throws -> String? {
        let report = try pool.scrub.runNow()
        guard !report.damage.isEmpty else { return nil }
        let listed = report.damage.prefix(4).map {
            "\($0.volume) offset \($0.offset) slot \($0.slot) live \($0.live) snapshots \($0.snapshots)"
        }
        return "scrub found \(report.damage.count) damaged block(s): \(listed.joined(separator: "; "))"
    }

    /// The scrub check above fails on blocks whose bytes changed behind the engine's back, in the live
    /// volume and in a snapshot.
    @Test func theChecksumCheckFindsDamagedBlocks() throws {
        let media = SimulatedMedia()
        let pool = try Pool(media: media, options: testOptions())
        defer { pool.close() }
        let id = try pool.volumes.create(name: "v", size: 1 << 20, chunkSize: 4096).id
        try writeBytes(pool, id, 0, pattern(3, 8192))
        try pool.snapshots.create(volume: "v", name: "s")
        try writeBytes(pool, id, 4096, pattern(4, 4096))
        try pool.flush()
        #expect(try Self.checksumDamage(pool) == nil)
        let file = try #require(media.slotFile(named: "slots-4096.dat"))
        for (chunk, version) in [(UInt64(0), 0), (1, 0)] {
            let slot = pool.versions(volume: "v", chunk: chunk)[version].slot
            var byte: [UInt8] = [0]
            try byte.withUnsafeMutableBytes { try file.read(into: $0, at: slot.index * 4096 + 100) }
            byte[0] ^= 0x40
            try byte.withUnsafeBytes { try file.write($0, at: slot.index * 4096 + 100) }
        }
        let damage = try #require(try Self.checksumDamage(pool))
        #expect(damage.contains("2 damaged block(s)"), "\(damage)")
    }

    static func run(chunkSize: UInt32) -> [String] {
        SeededGenerator.modelFailures("chunk \(chunkSize)") { try run(chunkSize: chunkSize, seed: $0) }
    }

    static func run(chunkSize: UInt32, seed: UInt64) throws -> [String] {
        var failures: [String] = []
        var random = SeededGenerator(seed: seed)
        var media = SimulatedMedia()
        var pool = try Pool(media: media, options: testOptions())
        var model = Model()
        var nextValue: UInt32 = 1
        var serial = 0
        let context = "seed \(seed) chunk \(chunkSize)"
        // For the summary line scripts/soak adds up.
        var cuts = 0
        var jobCuts = 0
        var sectorsChecked = 0
        // "b" sends what its snapshots preserve to another store (the COW-offload design's copy-out).
        try pool.stores.add(name: "disk2", path: "/disk2")
        for name in ["a", "b"] {
            try pool.volumes.create(
                name: name, size: UInt64(sectors * sector), chunkSize: chunkSize, preserveStore: name == "b" ? "disk2" : nil)
            model.live[name] = SectorModel(Array(repeating: 0, count: sectors))
        }

        func verifyAll(_ pool: Pool, afterCrash: Bool, _ what: String) throws -> Bool {
            for (key, image) in model.snapshots {
                let parts = key.split(separator: "@").map(String.init)
                let got = try pool.sectorImage(volume: parts[0], snapshot: parts[1], sectors: sectors)
                if let bad = image.firstMismatch(in: got, afterCrash: afterCrash) {
                    let chunk = UInt64(bad * sector) / UInt64(chunkSize)
                    failures.append(
                        "\(context) \(what): snapshot \(key) sector \(bad) changed: holds \(got[bad].prefix(4)), allowed \(image.allowed(bad, afterCrash: afterCrash)); chunk \(chunk) versions \(pool.versions(volume: parts[0], chunk: chunk)), epoch \(try pool.snapshots.info(volume: parts[0], name: parts[1]).epoch)"
                    )
                    for slot in pool.versions(volume: parts[0], chunk: chunk).map(\.slot) {
                        failures.append("  refcount of \(slot): \(pool.refcount(of: slot))")
                    }
                    for name in model.live.keys.sorted() {
                        for c in 0..<UInt64(sectors * sector) / UInt64(chunkSize) {
                            let vs = pool.versions(volume: name, chunk: c)
                            let mine = pool.versions(volume: parts[0], chunk: chunk).map(\.slot)
                            if vs.contains(where: { v in mine.contains(v.slot) && v.hasSlot }) && !(name == parts[0] && c == chunk) {
                                failures.append("  shared slot with \(name) chunk \(c): \(vs)")
                            }
                        }
                    }
                    return false
                }
            }
            for (name, image) in model.live {
                let got = try pool.sectorImage(volume: name, snapshot: nil, sectors: sectors)
                if let s = image.firstMismatch(in: got, afterCrash: afterCrash) {
                    failures.append(
                        "\(context) \(what): volume \(name) sector \(s) holds \(got[s].prefix(4)), allowed \(image.allowed(s, afterCrash: afterCrash))")
                    return false
                }
            }
            let report = try pool.checker.check()
            if !report.isHealthy {
                failures.append("\(context) \(what): pool check: \(report.errors)")
                return false
            }
            if let damage = try Self.checksumDamage(pool) {
                failures.append("\(context) \(what): \(damage)")
                return false
            }
            return true
        }

        let trace = getenv("CAIRN_TRACE") != nil
        let onlyChunk = getenv("CAIRN_CHUNK").map { UInt32(String(cString: $0)) ?? 0 }
        if let onlyChunk, onlyChunk != chunkSize { return [] }
        let verifyEach = getenv("CAIRN_VERIFY_EACH") != nil
        // Scrub (reads only, no flush) before every step: finds the step that left a block whose data and
        // checksum disagree, without changing what is durable when.
        let scrubEach = getenv("CAIRN_SCRUB_EACH") != nil
        for step in 0..<Self.steps {
            if verifyEach, step > 0 {
                guard try verifyAll(pool, afterCrash: false, "check before step \(step)") else { return failures }
            }
            if scrubEach, step > 0, let damage = try Self.checksumDamage(pool) {
                failures.append("\(context) before step \(step): \(damage)")
                return failures
            }
            let volumes = model.live.keys.sorted()
            let volume = volumes[Int.random(in: 0..<volumes.count, using: &random)]
            let id = try pool.volumes.id(named: volume)
            let first = Int.random(in: 0..<sectors, using: &random)
            let count = min(sectors - first, Int.random(in: 1...(Bool.random(using: &random) ? 8 : 200), using: &random))
            let op = Int.random(in: 0..<100, using: &random)
            if trace { print("step \(step) op \(op) volume \(volume) first \(first) count \(count)") }
            switch op {
            case 0..<45:
                let fua = Int.random(in: 0..<6, using: &random) == 0
                let value = nextValue
                nextValue += 1
                let data = (first..<(first + count)).flatMap { bytes(value, sector: $0) }
                try writeBytes(pool, id, UInt64(first * sector), data, fua: fua)
                for s in first..<(first + count) { model.live[volume]!.set(s, value, durably: fua) }
                if trace { print("  write value \(value) fua \(fua)") }
            case 45..<55:
                let mode: DiscardMode = Bool.random(using: &random) ? .trim : .zero
                try pool.discard(volumeID: id, offset: UInt64(first * sector), length: UInt64(count * sector), mode: mode)
                // TRIM frees whole sub-blocks only: learn from the volume which sectors read zero now.
                let after = try pool.sectorImage(volume: volume, snapshot: nil, sectors: sectors)
                for s in first..<(first + count)
                where after[s] == bytes(0, sector: s) && model.live[volume]!.current[s] != 0 {
                    model.live[volume]!.set(s, 0, durably: false)
                }
                if mode == .zero && !(first..<(first + count)).allSatisfy({ after[$0] == bytes(0, sector: $0) }) {
                    failures.append("\(context): WRITE_ZEROES left data at step \(step)")
                    return failures
                }
            case 55..<65:
                try pool.flush()
                model.flushedAll()
            case 65..<73:
                serial += 1
                let name = "s\(serial)"
                try pool.snapshots.create(volume: volume, name: name)
                if trace { print("  snapshot \(volume)@\(name)") }
                model.snapshots["\(volume)@\(name)"] = model.live[volume]!
            case 73..<78:
                let candidates = model.snapshots.keys.filter { !model.origins.values.contains($0) }.sorted()
                guard let key = candidates.randomElement(using: &random) else { continue }
                let parts = key.split(separator: "@").map(String.init)
                try pool.snapshots.delete(volume: parts[0], name: parts[1])
                if trace { print("  delete \(key)") }
                model.snapshots[key] = nil
                pool.waitForJobs()
            case 78..<82:
                let candidates = model.snapshots.keys.sorted()
                guard model.live.count < 6, let key = candidates.randomElement(using: &random) else { continue }
                serial += 1
                let parts = key.split(separator: "@").map(String.init)
                let clone = "c\(serial)"
                try pool.volumes.clone(volume: parts[0], snapshot: parts[1], as: clone)
                if trace { print("  clone \(key) as \(clone)") }
                model.live[clone] = model.snapshots[key]!
                model.origins[clone] = key
            case 82..<85:
                let own = model.snapshots.keys.filter { $0.hasPrefix(volume + "@") }.sorted()
                guard let key = own.randomElement(using: &random) else { continue }
                let parts = key.split(separator: "@").map(String.init)
                let epoch = try pool.snapshots.info(volume: volume, name: parts[1]).epoch
                let newer = try pool.snapshots.list(volume: volume).filter { $0.epoch > epoch }
                // Newer snapshots with clones block a rollback.
                guard newer.allSatisfy({ $0.clones.isEmpty }) else { continue }
                try pool.snapshots.rollback(volume: volume, to: parts[1], force: true)
                if trace { print("  rollback \(key), dropping \(newer.map(\.name))") }
                for snapshot in newer { model.snapshots["\(volume)@\(snapshot.name)"] = nil }
                model.live[volume] = model.snapshots[key]!
                pool.waitForJobs()
            case 85..<87:
                // Dedup shares identical versions (stamps repeat across snapshots and clones).
                try pool.dedup.start()
                pool.waitForJobs()
                if let failed = pool.jobs.list().first(where: { $0.state == .failed }) {
                    failures.append("\(context): dedup failed at step \(step): \(failed.message ?? "")")
                    return failures
                }
            case 87..<90:
                guard try verifyAll(pool, afterCrash: false, "live check at step \(step)") else { return failures }
            case 90..<95:
                // Power cut in the middle of a background job: reclaim after a snapshot deletion, or dedup.
                // Everything is flushed first, so each image taken at one of the job's commits must reopen
                // to exactly the model; the snapshot being deleted may still be there, unchanged, or gone.
                pool.waitForJobs()
                try pool.flush()
                model.flushedAll()
                let deletable = model.snapshots.keys.filter { !model.origins.values.contains($0) }.sorted()
                let deleting = Bool.random(using: &random) ? deletable.randomElement(using: &random) : nil
                let images = Mutex<[SimulatedMedia]>([])
                let hookRandom = Mutex(SeededGenerator(seed: seed ^ UInt64(step)))
                media.store.setAfterCommit { [media] in
                    hookRandom.withLock { rng in
                        guard Bool.random(using: &rng) else { return }
                        let image = media.crashImage(using: &rng)
                        images.withLock { if $0.count < 3 { $0.append(image) } }
                    }
                }
                var deletedContent: [UInt32]?  // flushed above: exact
                if let deleting {
                    let parts = deleting.split(separator: "@").map(String.init)
                    try pool.snapshots.delete(volume: parts[0], name: parts[1])
                    deletedContent = model.snapshots.removeValue(forKey: deleting)?.current
                } else {
                    try pool.dedup.start()
                }
                if trace { print("  job during which to cut: \(deleting.map { "delete \($0)" } ?? "dedup")") }
                pool.waitForJobs()
                media.store.setAfterCommit(nil)
                for image in images.withLock({ $0 }) {
                    jobCuts += 1
                    let reopened = try Pool(media: image, options: testOptions())
                    defer { reopened.close() }
                    let what = "power cut during \(deleting.map { "reclaim of \($0)" } ?? "dedup") at step \(step)"
                    guard try verifyAll(reopened, afterCrash: true, what) else { return failures }
                    if let deleting, let deletedContent {
                        let parts = deleting.split(separator: "@").map(String.init)
                        if (try? reopened.snapshots.info(volume: parts[0], name: parts[1])) != nil {
                            let got = try reopened.sectorImage(volume: parts[0], snapshot: parts[1], sectors: sectors)
                            if let bad = (0..<sectors).first(where: { got[$0] != bytes(deletedContent[$0], sector: $0) }) {
                                failures.append("\(context) \(what): the snapshot being deleted changed at sector \(bad)")
                                return failures
                            }
                        }
                    }
                    for name in model.live.keys.sorted() {
                        let got = try reopened.sectorImage(volume: name, snapshot: nil, sectors: sectors)
                        if let bad = (0..<sectors).first(where: { got[$0] != bytes(model.live[name]!.current[$0], sector: $0) }) {
                            failures.append(
                                "\(context) \(what): \(name) sector \(bad) holds \(got[bad].prefix(4)), flushed value \(model.live[name]!.current[bad])")
                            return failures
                        }
                        sectorsChecked += sectors
                    }
                    // The interrupted job resumes (or is dropped) at open; the pool stays consistent after it.
                    reopened.waitForJobs()
                    guard try verifyAll(reopened, afterCrash: true, what + ", after the reopened pool's jobs") else { return failures }
                }
            default:
                // Power cut between operations: what the disk kept must be a state the contract allows.
                pool.waitForJobs()
                let image = media.crashImage(using: &random)
                pool.simulateProcessDeath()
                pool = try Pool(media: image, options: testOptions())
                media = image
                cuts += 1
                guard try verifyAll(pool, afterCrash: true, "power cut at step \(step)") else { return failures }
                for name in model.live.keys.sorted() {
                    let got = try pool.sectorImage(volume: name, snapshot: nil, sectors: sectors)
                    for s in 0..<sectors {
                        guard let kept = model.live[name]!.allowed(s).first(where: { bytes($0, sector: s) == got[s] }) else {
                            failures.append(
                                "\(context) power cut at step \(step): \(name) sector \(s) holds \(got[s].prefix(4)), allowed \(model.live[name]!.allowed(s))")
                            return failures
                        }
                        model.live[name]!.current[s] = kept
                    }
                    sectorsChecked += sectors
                }
                // Each snapshot holds one of its allowed values per sector (checked above): that one, forever.
                for key in model.snapshots.keys.sorted() {
                    let parts = key.split(separator: "@").map(String.init)
                    let got = try pool.sectorImage(volume: parts[0], snapshot: parts[1], sectors: sectors)
                    for s in 0..<sectors {
                        model.snapshots[key]!.current[s] =
                            model.snapshots[key]!.allowed(s).first { bytes($0, sector: s) == got[s] } ?? model.snapshots[key]!.current[s]
                    }
                    sectorsChecked += sectors
                }
                model.flushedAll()
            }
        }
        pool.waitForJobs()
        _ = try verifyAll(pool, afterCrash: false, "final check")
        pool.close()
        print("soak: snapshot model \(context): \(Self.steps) steps, \(cuts + jobCuts) power cuts (\(jobCuts) during jobs), \(sectorsChecked) sectors checked, \(failures.count) failures")
        return failures
    }
}
