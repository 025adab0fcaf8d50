@_spi(Testing) import CairnEngine
import CairnTestSupport
import Foundation
import Glibc
import InteropSupport
import Synchronization
import Testing

/// The figures generalized: a seeded random mix of host writes (to the source and to fractured clones),
/// fracture, sync, reverse sync, protected restore, job steps and power cuts, with every image checked
/// against a model after every step that defines it. Host writes are FUA so the model is exact after a
/// crash; what the copy engines did since the last commit may be lost and must be redone correctly.
/// Power cuts come between operations and, during job steps, at the job's own commits.
@Suite struct CloneGroupModelTests {
    static let block = 4096
    static let blocks = 96
    static let extent = 16 << 10
    static let clones = ["a", "b"]
    /// Operations per run; `scripts/soak` raises it (with several seeds) for the long runs.
    static let steps = Int(ProcessInfo.processInfo.environment["CAIRN_MODEL_STEPS"] ?? "") ?? 300

    /// Content of a block holding write `value` (0: zeros); self-identifying.
    static func bytes(_ value: UInt32, block: Int) -> [UInt8] {
        guard value != 0 else { return [UInt8](repeating: 0, count: Self.block) }
        var out = [UInt8](repeating: 0, count: Self.block)
        for i in 0..<Self.block { out[i] = UInt8(truncatingIfNeeded: Int(value) &* 97 &+ block &* 13 &+ i / 7) }
        withUnsafeBytes(of: value.littleEndian) { out.replaceSubrange(0..<4, with: $0) }
        return out
    }

    @Test(arguments: [65536, 4096])
    func randomOperationsAndPowerCutsMatchTheModel(chunkSize: Int) async throws {
        for failure in try await blocking({ Self.run(chunkSize: chunkSize) }) {
            Issue.record(Comment(rawValue: failure))
        }
    }

    static func run(chunkSize: Int) -> [String] {
        SeededGenerator.modelFailures("chunk \(chunkSize)") { try run(chunkSize: chunkSize, seed: $0) }
    }

    static func run(chunkSize: Int, seed: UInt64) throws -> [String] {
        var random = SeededGenerator(seed: seed)
        var failures: [String] = []
        let trace = getenv("CAIRN_TRACE") != nil
        var pool = try Pool(media: SimulatedMedia(), options: cloneTestOptions())
        let size = UInt64(blocks * block)
        _ = try pool.volumes.create(name: "src", size: size, chunkSize: UInt32(chunkSize))
        // The model: block values of the source as hosts see it, and of each clone where defined (nil
        // while a sync into it runs: its content is then in between).
        var source = [UInt32](repeating: 0, count: blocks)
        var clone: [String: [UInt32]?] = [:]
        var nextValue: UInt32 = 1
        // For the summary line scripts/soak adds up.
        var cuts = 0
        var jobCuts = 0
        var blocksChecked = 0

        func id(_ name: String) throws -> UInt64 { try pool.volumes.id(named: name) }
        func write(_ name: String, _ first: Int, _ count: Int) throws {
            var data: [UInt8] = []
            let value = nextValue
            nextValue += 1
            for b in first..<(first + count) { data += bytes(value, block: b) }
            try writeBytes(pool, try id(name), UInt64(first * block), data, fua: true)
            if name == "src" {
                for b in first..<(first + count) { source[b] = value }
                for (other, content) in clone where content != nil {
                    let state = try pool.cloneGroups.info(named: other).state
                    if state == .synchronized || state == .reverseSyncing {
                        for b in first..<(first + count) { clone[other]!![b] = value }
                    }
                }
            } else {
                for b in first..<(first + count) { clone[name]!![b] = value }
            }
        }
        func check(_ what: String) throws { try check(what, in: pool, clone: clone) }
        func check(_ what: String, in pool: Pool, clone: [String: [UInt32]?]) throws {
            let got = try readBytes(pool, try pool.volumes.id(named: "src"), 0, Int(size))
            blocksChecked += blocks
            for b in 0..<blocks where Array(got[(b * block)..<((b + 1) * block)]) != bytes(source[b], block: b) {
                failures.append("seed \(seed) chunk \(chunkSize) \(what): source block \(b) differs from the model")
                break
            }
            for (name, content) in clone {
                guard let content else { continue }
                let got = try readBytes(pool, try pool.volumes.id(named: name), 0, Int(size))
                blocksChecked += blocks
                for b in 0..<blocks where Array(got[(b * block)..<((b + 1) * block)]) != bytes(content[b], block: b) {
                    failures.append("seed \(seed) chunk \(chunkSize) \(what): clone \(name) block \(b) differs")
                    break
                }
            }
        }
        /// A power cut at one of a job step's commits: the image reopens healthy; the source holds what the
        /// model says, a clone whose sync completed holds the source, one still synchronizing is in between;
        /// the interrupted jobs then finish on the reopened pool with the same result.
        func checkJobImage(_ image: SimulatedMedia, _ what: String) throws {
            jobCuts += 1
            let reopened = try Pool(media: image, options: cloneTestOptions())
            defer { reopened.close() }
            let report = try reopened.checker.check()
            if !report.isHealthy { failures.append("seed \(seed) chunk \(chunkSize) \(what): \(report.errors)") }
            var expected = clone
            func learnStates() throws {
                for name in clones {
                    switch try reopened.cloneGroups.info(named: name).state {
                    case .synchronizing: expected[name] = .some(nil)
                    case .synchronized where expected[name]! == nil: expected[name] = .some(source)
                    default: break
                    }
                }
            }
            try learnStates()
            try check(what, in: reopened, clone: expected)
            for name in clones where [CloneState.synchronizing, .reverseSyncing, .restoring].contains(try reopened.cloneGroups.info(named: name).state) {
                _ = try reopened.cloneGroups.runJob(clone: name, maxExtents: nil)
            }
            try learnStates()
            try check(what + ", after the reopened pool's jobs", in: reopened, clone: expected)
        }
        /// Runs a clone's job for up to `steps` extents (all when nil) and applies its end to the model.
        /// `cutting`: images taken at some of the step's commits (at most 2) are checked afterwards.
        func step(_ name: String, _ steps: Int?, cutting: Bool = false) throws {
            let before = try pool.cloneGroups.info(named: name).state
            guard [CloneState.synchronizing, .reverseSyncing, .restoring].contains(before) else { return }
            let images = Mutex<[SimulatedMedia]>([])
            if cutting {
                let media = pool.media as! SimulatedMedia
                let hookRandom = Mutex(SeededGenerator(seed: random.next()))
                media.store.setAfterCommit { [media] in
                    hookRandom.withLock { rng in
                        guard Bool.random(using: &rng) else { return }
                        let image = media.crashImage(using: &rng)
                        images.withLock { if $0.count < 2 { $0.append(image) } }
                    }
                }
            }
            let ended = try pool.cloneGroups.runJob(clone: name, maxExtents: steps)
            if cutting { (pool.media as! SimulatedMedia).store.setAfterCommit(nil) }
            if ended, before == .synchronizing, try pool.cloneGroups.info(named: name).state == .synchronized {
                clone[name] = .some(source)
            }
            for image in images.withLock({ $0 }) {
                try checkJobImage(image, "power cut during a \(before.rawValue) job step of \(name)")
            }
        }

        for name in clones {
            for _ in 0..<4 { try write("src", Int.random(in: 0..<(blocks - 4), using: &random), 4) }
            _ = try pool.cloneGroups.add(source: "src", name: name, extentSize: UInt64(extent))
            clone[name] = .some(nil)
        }
        for stepIndex in 0..<Self.steps {
            let op = Int.random(in: 0..<100, using: &random)
            let name = clones.randomElement(using: &random)!
            let state = try pool.cloneGroups.info(named: name).state
            let first = Int.random(in: 0..<blocks, using: &random)
            let count = min(blocks - first, Int.random(in: 1...6, using: &random))
            if trace { print("step \(stepIndex) op \(op) clone \(name) \(state.rawValue) blocks \(first)+\(count)") }
            let restoring = try pool.cloneGroups.list().contains { $0.state == .restoring || $0.state == .reverseSyncing }
            let othersMirrored = try pool.cloneGroups.list().contains {
                $0.name != name && [CloneState.synchronizing, .synchronized, .reverseSyncing].contains($0.state)
            }
            switch op {
            case 0..<35:
                try write("src", first, count)
            case 35..<45:
                if state == .fractured { try write(name, first, count) }
            case 45..<55:
                if state == .synchronized {
                    try pool.cloneGroups.fracture(named: name)
                }
            case 55..<58:
                if state == .fractured && !restoring {
                    _ = try pool.cloneGroups.sync(named: name)
                    clone[name] = .some(nil)
                }
            case 58..<62:
                if state == .fractured && !restoring && !othersMirrored {
                    _ = try pool.cloneGroups.reverseSync(named: name)
                    source = clone[name]!!
                }
            case 62..<72:
                if state == .fractured && !restoring && !othersMirrored {
                    _ = try pool.cloneGroups.restore(named: name, protected: true)
                    source = clone[name]!!
                }
            case 72..<86:
                try step(name, Int.random(in: 1...3, using: &random), cutting: Bool.random(using: &random))
            case 86..<90:
                try step(name, nil, cutting: Bool.random(using: &random))
            default:
                // Power cut: reopen from what the disk kept. Jobs are registered again, not yet run.
                let image = (pool.media as! SimulatedMedia).crashImage(using: &random)
                pool.simulateProcessDeath()
                pool = try Pool(media: image, options: cloneTestOptions())
                cuts += 1
                let report = try pool.checker.check()
                if !report.isHealthy { failures.append("seed \(seed) after power cut at step \(stepIndex): \(report.errors)") }
                for name in clones {
                    // Interrupted mirrored writes make a synchronized clone synchronizing again.
                    if try pool.cloneGroups.info(named: name).state == .synchronizing { clone[name] = .some(nil) }
                }
            }
            try check("step \(stepIndex) (op \(op))")
            if !failures.isEmpty { break }
        }
        for name in clones { try step(name, nil) }
        try check("after every job finished")
        for name in clones {
            let info = try pool.cloneGroups.info(named: name)
            if info.state == .synchronizing || info.state == .restoring || info.state == .reverseSyncing {
                failures.append("seed \(seed): clone \(name) still \(info.state.rawValue) after its job")
            }
        }
        if !(try pool.checker.check().isHealthy) { failures.append("seed \(seed): pool check failed at the end") }
        pool.close()
        print(
            "soak: clone model seed \(seed) chunk \(chunkSize): \(Self.steps) steps, \(cuts + jobCuts) power cuts (\(jobCuts) during jobs), \(blocksChecked) blocks checked, \(failures.count) failures"
        )
        return failures
    }
}
