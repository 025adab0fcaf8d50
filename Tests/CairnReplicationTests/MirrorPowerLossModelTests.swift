import CairnEngine
import CairnIO
import CairnTestSupport
import Foundation
import MirrorProtocol
import NIOCore
import Testing

@testable import CairnReplication

/// A primary and a target in one process, on simulated disks, under a seeded random workload: host
/// writes (some FUA) and WRITE_ZEROES through the mirror, FLUSHes, link faults both ways (connections
/// closed, refused, write frames lost, traffic delayed), I/O errors on either node, sever and
/// re-establish, and power cuts of either node at random points (in the middle of resyncs too).
///
/// Checked against a model of what hosts were told (`SectorModel`): after a primary's power cut every
/// sector holds a value the block-device contract allows (what a completed FLUSH or FUA write covered,
/// or something written since); whenever the mirror says it is mirrored with nothing dirty (after a
/// FLUSH through it), the target equals the primary, and the primary the model, sector by sector. A
/// fracture that outlived a cut shows there too: the resync that follows must make both sides equal, so
/// the change map must still hold every extent the target may lack.
@Suite("mirror power-loss model")
struct MirrorPowerLossModelTests {
    /// Operations per run; `scripts/soak` raises it (with several seeds) for the long runs.
    static let steps = Int(ProcessInfo.processInfo.environment["CAIRN_MODEL_STEPS"] ?? "") ?? 200

    @Test("acknowledged writes survive power cuts of either node; in sync means equal to the primary and the model")
    func mirrorModel() async throws {
        let seed = SeededGenerator.seedFromEnvironment()
        let run = try await MirrorModelRun(seed: seed)
        let failures = await run.run(steps: Self.steps)
        for failure in failures { Issue.record(Comment(rawValue: failure)) }
    }
}

/// One run of the model test: the two nodes, the link between them, the model and the counters.
final class MirrorModelRun: @unchecked Sendable {
    static let sectors = 2048
    static let volumeSize = sectors * SectorModel.sector
    /// 16 extents of 64 KiB: a write often shares an extent with earlier ones, a resync has several to copy.
    static let extentSize: UInt64 = 64 << 10
    static let secret = try! ReplicationSecret(bytes: Array("mirror-model-secret-0123456789".utf8))
    /// Longest wait for the mirror to be in sync once every fault is healed. The initial sync and every
    /// resync copy 1 MiB at most; the rest is reconnects and timeouts on a machine shared with builds.
    static let settleTimeout: Double = 180

    let seed: UInt64
    var random: SeededGenerator
    var primary: SimulatedMirrorNode
    var target: SimulatedMirrorNode
    let link: FaultyLink
    var model = SectorModel(sectors: sectors)
    var nextValue: UInt32 = 1
    /// A host write failed (an I/O error): what the primary holds there is unknown until its next power cut.
    var primaryUncertain = false
    /// Steps at which timed link faults end.
    var refusingUntil = 0
    var delayedUntil = 0
    var failures: [String] = []
    var directories: [String] = []
    var trace = ProcessInfo.processInfo.environment["CAIRN_TRACE"] != nil
    var step = 0

    // For the summary line scripts/soak adds up.
    var primaryCuts = 0
    var targetCuts = 0
    var cutsDuringResync = 0
    var writesAcknowledged = 0
    var sectorsChecked = 0
    var settles = 0

    init(seed: UInt64) async throws {
        self.seed = seed
        random = SeededGenerator(seed: seed)
        let primaryDirectory = try SimulatedMirrorNode.newDirectory("primary")
        let targetDirectory = try SimulatedMirrorNode.newDirectory("target")
        directories = [primaryDirectory, targetDirectory]
        let target = try SimulatedMirrorNode(
            label: "target", secret: Self.secret, media: SimulatedMedia(), directory: targetDirectory,
            settings: { _ in })
        link = try await FaultyLink.start(upstreamPort: try await target.serve(secret: Self.secret))
        self.target = target
        primary = try SimulatedMirrorNode(
            label: "primary", secret: Self.secret, media: SimulatedMedia(), directory: primaryDirectory,
            settings: Self.primarySettings)
    }

    static func primarySettings(_ settings: inout ReplicationSettings) {
        // Short, so that a lost frame costs a second, not the daemon's 5 s; a frame delayed past it on a
        // busy machine is a retransmission or a fracture, which the model allows anyway.
        settings.frameTimeout = 1
        // Checkpoints run between the steps and during cuts.
        settings.checkpointInterval = 0.3
        // Resyncs long enough for cuts and faults to land in the middle of them.
        settings.resyncExtentDelay = 0.003
    }

    func log(_ text: @autoclosure () -> String) { if trace { print("step \(step): \(text())") } }

    func fail(_ text: String) { failures.append("seed \(seed) step \(step): \(text)") }

    /// The whole run; returns the failures (empty when every check held).
    func run(steps: Int) async -> [String] {
        do {
            try await setUp()
            for index in 0..<steps where failures.isEmpty {
                step = index
                try await runStep()
            }
            step = steps
            if failures.isEmpty { _ = try await settle("final check") }
        } catch {
            fail("\(error)")
        }
        print(
            "soak: mirror model seed=\(seed): \(steps) steps, \(primaryCuts + targetCuts) power cuts (\(primaryCuts) primary, \(targetCuts) target, \(cutsDuringResync) during resyncs), \(writesAcknowledged) writes acknowledged, \(sectorsChecked) sectors checked, \(settles) in-sync checks, \(link.framesLost) frames lost, \(failures.count) failures"
        )
        await link.close()
        await primary.close()
        await target.close()
        for directory in directories { try? FileManager.default.removeItem(atPath: directory) }
        return failures
    }

    /// A volume with unflushed data on it, mirrored to a fresh target volume, in sync.
    func setUp() async throws {
        let id = try primary.pool.volumes.create(name: "src", size: UInt64(Self.volumeSize), chunkSize: 65536).id
        let data = (0..<512).flatMap { SectorModel.bytes(nextValue, sector: $0) }
        try data.withUnsafeBytes { try primary.pool.write(volumeID: id, offset: 0, source: .bytes($0), fua: false) }
        for sector in 0..<512 { model.set(sector, nextValue) }
        nextValue += 1
        _ = try await primary.replication.establish(
            volume: "src", target: "127.0.0.1:\(link.port)/dst", extentSize: Self.extentSize, discardTargetChanges: false)
        _ = try await settle("initial sync")
    }

    func runStep() async throws {
        // An I/O error stopped a pool's writes (or left a write's outcome unknown): only a restart helps.
        if primary.pool.hasFailed || primaryUncertain { return try await cutPrimary("its pool stopped after an I/O error") }
        if target.pool.hasFailed { try await cutTarget("its pool stopped after an I/O error") }
        if step >= refusingUntil { link.setRefusing(false) }
        if step >= delayedUntil { link.setDelay(.zero) }
        let op = random.next(100)
        switch op {
        case 0..<40: try await write()
        case 40..<45: try await writeZeroes()
        case 45..<55: try await flush()
        case 55..<59:
            log("link: every connection closed")
            link.cutAll()
        case 59..<61:
            refusingUntil = step + 1 + random.next(4)
            log("link: refusing connections until step \(refusingUntil)")
            link.setRefusing(true)
        case 61..<64:
            let count = 1 + random.next(2)
            log("link: losing the next \(count) write frames")
            link.loseWriteFrames(count)
        case 64..<67:
            delayedUntil = step + 1 + random.next(6)
            let delay = 1 + random.next(30)
            log("link: \(delay) ms delay until step \(delayedUntil)")
            link.setDelay(.milliseconds(Int64(delay)))
        case 67..<69:
            log("target: the next metadata sync fails")
            target.media.slotFile(named: SimulatedMedia.journalName)?.failNextSyncs(1)
        case 69..<71:
            log("primary: the next metadata sync fails")
            primary.media.slotFile(named: SimulatedMedia.journalName)?.failNextSyncs(1)
        case 71..<73:
            log("sever")
            _ = try? await primary.replication.sever(volume: "src")
        case 73..<75:
            try await establishAgain()
        case 75..<80:
            try await reestablishIfSplit()
        case 80..<86:
            try await cutPrimary("at random")
        case 86..<92:
            try await cutTarget("at random")
        case 92..<95:
            _ = try await settle("in-sync check")
        default:
            // Background work (resync, checkpoints, retries) moves on meanwhile.
            try await Task.sleep(nanoseconds: UInt64(1 + random.next(30)) * 1_000_000)
        }
        if !primaryUncertain && failures.isEmpty { try checkLive() }
    }

    // MARK: host I/O

    /// A host request through the primary's mirror, as the NBD export issues it.
    func hostWrite(_ operation: MirrorOperation, fua: Bool, local: @escaping @Sendable (Pool, UInt64) throws -> Void)
        async throws
    {
        let node = primary
        let (pool, executor) = (node.pool, node.executor)
        let id = try pool.volumes.id(named: "src")
        let run: @Sendable () async throws -> Void = { try await executor.run { try local(pool, id) } }
        guard let mirror = node.replication.routeWrite(volumeID: id) else {
            defer { node.replication.unmirroredWriteEnded(volumeID: id) }
            return try await run()
        }
        try await mirror.write(operation, fua: fua, local: run)
    }

    func randomRange() -> Range<Int> {
        let first = random.next(Self.sectors)
        let count = min(Self.sectors - first, 1 + random.next(random.next(4) == 0 ? 300 : 24))
        return first..<(first + count)
    }

    func write() async throws {
        let range = randomRange()
        let fua = random.next(6) == 0
        let value = nextValue
        nextValue += 1
        let data = range.flatMap { SectorModel.bytes(value, sector: $0) }
        let offset = UInt64(range.lowerBound * SectorModel.sector)
        log("write \(value) sectors \(range) fua \(fua)")
        do {
            try await hostWrite(.write(offset: offset, data: ByteBuffer(bytes: data)), fua: fua) { pool, id in
                try data.withUnsafeBytes { try pool.write(volumeID: id, offset: offset, source: .bytes($0), fua: fua) }
            }
            for sector in range { model.set(sector, value, durably: fua) }
            writesAcknowledged += 1
        } catch {
            log("write failed: \(error)")
            hostWriteFailed(range, value: value)
        }
    }

    func writeZeroes() async throws {
        let range = randomRange()
        let fua = random.next(6) == 0
        let punch = Bool.random(using: &random)
        let (offset, length) = (UInt64(range.lowerBound * SectorModel.sector), UInt64(range.count * SectorModel.sector))
        log("write zeroes sectors \(range) fua \(fua) punch \(punch)")
        do {
            try await hostWrite(.writeZeroes(offset: offset, length: length, punch: punch), fua: fua) { pool, id in
                if punch {
                    try pool.discard(volumeID: id, offset: offset, length: length, mode: .zero, fua: fua)
                } else {
                    try pool.write(volumeID: id, offset: offset, source: .zeros(length: length), fua: fua)
                }
            }
            for sector in range { model.set(sector, 0, durably: fua) }
            writesAcknowledged += 1
        } catch {
            log("write zeroes failed: \(error)")
            hostWriteFailed(range, value: 0)
        }
    }

    /// A write the host was not told succeeded: each sector may hold the old value or the new one.
    func hostWriteFailed(_ range: Range<Int>, value: UInt32) {
        for sector in range { model.since[sector].append(value) }
        primaryUncertain = true
    }

    /// A host FLUSH: on success everything acknowledged before it is durable.
    func flush() async throws {
        log("flush")
        if try await hostFlush() { model.flushed() }
    }

    func hostFlush() async throws -> Bool {
        let node = primary
        let (pool, executor) = (node.pool, node.executor)
        let local: @Sendable () async throws -> Void = { try await executor.run { try pool.flush() } }
        do {
            if let mirror = node.replication.primary(volumeID: try pool.volumes.id(named: "src")) {
                try await mirror.flush(local: local)
            } else {
                try await local()
            }
            return true
        } catch {
            log("flush failed: \(error)")
            return false
        }
    }

    // MARK: management

    /// `mirror remove`, unmirrored writes (never flushed: only the initial sync's own flushes make them
    /// durable), and a new pairing with the same target volume, which holds the old pairing's data.
    func establishAgain() async throws {
        log("remove the mirror, write unmirrored, establish again")
        do { try await primary.replication.remove(volume: "src") } catch { log("remove failed: \(error)") }
        for _ in 0..<2 { try await write() }
        try await establishIfUnmirrored()
        // The moment the initial sync's durability is for: a primary cut as soon as it is done (or during it).
        guard Bool.random(using: &random) else { return }
        for _ in 0..<random.next(300) {
            guard (try? primary.replication.info(volume: "src").state) == "synchronizing" else { break }
            try await Task.sleep(nanoseconds: 5_000_000)
        }
        try await cutPrimary("after the initial sync")
    }

    func establishIfUnmirrored() async throws {
        guard primary.replication.primary(volumeID: try primary.pool.volumes.id(named: "src")) == nil else { return }
        do {
            _ = try await primary.replication.establish(
                volume: "src", target: "127.0.0.1:\(link.port)/dst", extentSize: Self.extentSize, discardTargetChanges: true)
        } catch {
            log("establish failed: \(error)")
        }
    }

    func reestablishIfSplit() async throws {
        try await establishIfUnmirrored()
        guard primary.replication.primary(volumeID: try primary.pool.volumes.id(named: "src")) != nil else { return }
        let info = try primary.replication.info(volume: "src")
        guard info.state == "fractured" || info.state == "severed" else { return }
        log("re-establish (\(info.state): \(info.lastError ?? ""))")
        do {
            _ = try await primary.replication.reestablish(volume: "src", discardTargetChanges: false)
        } catch let error as ReplicationError where error.code == .diverged || error.code == .targetChanged {
            // No host ever writes the target here: its data cannot have changed on its own.
            fail("re-establish refused as if the target had been written: \(error)")
        } catch {
            log("re-establish failed: \(error)")
        }
    }

    // MARK: power cuts

    /// A generator for the crash images of one cut: the images depend on background timing, so they
    /// draw from their own generator and the operations stay the seed's.
    func cutRandom() -> SeededGenerator {
        SeededGenerator(seed: seed ^ (UInt64(primaryCuts + targetCuts + 1) &* 0x9E37_79B9_7F4A_7C15))
    }

    func cutPrimary(_ why: String) async throws {
        let resyncing = (try? primary.replication.info(volume: "src").state) == "synchronizing"
        log("primary power cut (\(why))\(resyncing ? " during a resync" : "")")
        var images = cutRandom()
        let (media, directory) = try await primary.powerCut(using: &images)
        directories.append(directory)
        primaryCuts += 1
        if resyncing { cutsDuringResync += 1 }
        primary = try SimulatedMirrorNode(
            label: "primary", secret: Self.secret, media: media, directory: directory, settings: Self.primarySettings)
        let report = try primary.pool.checker.check()
        if !report.isHealthy { fail("primary pool check after a power cut: \(report.errors)") }
        let bytes = try primary.bytes("src", size: Self.volumeSize)
        for sector in 0..<Self.sectors {
            let got = Array(bytes[(sector * SectorModel.sector)..<((sector + 1) * SectorModel.sector)])
            guard let kept = model.allowed(sector).first(where: { SectorModel.bytes($0, sector: sector) == got }) else {
                fail(
                    "after a primary power cut sector \(sector) holds \(Self.describe(got)), allowed \(model.allowed(sector)) (durable \(model.durable[sector]))"
                )
                return
            }
            model.current[sector] = kept
        }
        sectorsChecked += Self.sectors
        model.flushed()
        primaryUncertain = false
        // As the daemon starts: a mirror linked at the cut reconnects and resyncs what its map holds.
        primary.replication.resume()
    }

    func cutTarget(_ why: String) async throws {
        let resyncing = (try? primary.replication.info(volume: "src").state) == "synchronizing"
        log("target power cut (\(why))\(resyncing ? " during a resync" : "")")
        var images = cutRandom()
        let link = self.link
        let (media, directory) = try await target.powerCut(using: &images) { link.setTarget(down: true) }
        directories.append(directory)
        targetCuts += 1
        if resyncing { cutsDuringResync += 1 }
        target = try SimulatedMirrorNode(
            label: "target", secret: Self.secret, media: media, directory: directory, settings: { _ in })
        let report = try target.pool.checker.check()
        if !report.isHealthy { fail("target pool check after a power cut: \(report.errors)") }
        link.setTarget(down: false, port: try await target.serve(secret: Self.secret))
    }

    // MARK: checks

    /// The primary's volume equals the model exactly (nothing was cut since the model last learned it).
    func checkLive() throws {
        let bytes = try primary.bytes("src", size: Self.volumeSize)
        for sector in 0..<Self.sectors {
            let got = Array(bytes[(sector * SectorModel.sector)..<((sector + 1) * SectorModel.sector)])
            if got != SectorModel.bytes(model.current[sector], sector: sector) {
                fail("the primary's sector \(sector) holds \(Self.describe(got)), the model \(model.current[sector])")
                return
            }
        }
    }

    /// Heals the link (and restarts a node whose pool stopped), re-establishes until the mirror is in
    /// sync with nothing dirty, then compares the target with the primary and the primary with the model.
    /// Returns false (with a failure recorded) when it never got there.
    func settle(_ what: String) async throws -> Bool {
        link.heal()
        refusingUntil = 0
        delayedUntil = 0
        let deadline = Date().addingTimeInterval(Self.settleTimeout)
        while Date() < deadline {
            if primary.pool.hasFailed || primaryUncertain { try await cutPrimary("its pool stopped after an I/O error") }
            if target.pool.hasFailed { try await cutTarget("its pool stopped after an I/O error") }
            guard failures.isEmpty else { return false }
            try await establishIfUnmirrored()
            guard primary.replication.primary(volumeID: try primary.pool.volumes.id(named: "src")) != nil else {
                try await Task.sleep(nanoseconds: 20_000_000)
                continue
            }
            let info = try primary.replication.info(volume: "src")
            if info.state == "fractured" || info.state == "severed" {
                try await reestablishIfSplit()
                try await Task.sleep(nanoseconds: 20_000_000)
                continue
            }
            guard info.state == "mirrored", info.dirtyExtents == 0 else {
                try await Task.sleep(nanoseconds: 20_000_000)
                continue
            }
            // A FLUSH through the mirror: a target restart the primary has not noticed yet is noticed now
            // (the reconnect turns its activity log dirty), and both sides' data is durable.
            guard try await hostFlush() else {
                try await Task.sleep(nanoseconds: 20_000_000)
                continue
            }
            model.flushed()
            let after = try primary.replication.info(volume: "src")
            guard after.state == "mirrored", after.dirtyExtents == 0 else { continue }
            try compare(what)
            return failures.isEmpty
        }
        let info = try primary.replication.info(volume: "src")
        fail("\(what): the mirror never got in sync within \(Self.settleTimeout) s: \(info)")
        return false
    }

    /// In sync: the target equals the primary, and the primary the model, for every sector.
    func compare(_ what: String) throws {
        settles += 1
        try checkLive()
        let here = try primary.bytes("src", size: Self.volumeSize)
        let there = try target.bytes("dst", size: Self.volumeSize)
        sectorsChecked += Self.sectors
        guard here != there else { return }
        let sector = (0..<Self.sectors).first { s in
            here[(s * SectorModel.sector)..<((s + 1) * SectorModel.sector)] != there[(s * SectorModel.sector)..<((s + 1) * SectorModel.sector)]
        }!
        let got = Array(there[(sector * SectorModel.sector)..<((sector + 1) * SectorModel.sector)])
        fail(
            "\(what): the mirror says it is in sync but the target's sector \(sector) (extent \(UInt64(sector * SectorModel.sector) / Self.extentSize)) holds \(Self.describe(got)), the primary's and the model's \(model.current[sector])"
        )
    }

    /// A sector's content as the write that made it, when it is one.
    static func describe(_ bytes: [UInt8]) -> String {
        if bytes.allSatisfy({ $0 == 0 }) { return "zeros" }
        let value = bytes.prefix(4).enumerated().reduce(UInt32(0)) { $0 | UInt32($1.element) << (8 * UInt32($1.offset)) }
        return "write \(value)"
    }
}
