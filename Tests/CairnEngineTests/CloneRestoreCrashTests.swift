@_spi(Testing) import CairnEngine
import CairnTestSupport
import InteropSupport
import Testing

/// A protected restore under host writes that are unflushed, flushed or FUA, cut by a power loss at a
/// random moment and resumed: the durability contract of a block device still holds (what a FLUSH or FUA
/// acknowledged reads back; an unflushed write is all there, partly there by sector, or gone), the clone
/// is never modified, and when the restore ends the clone's new delta map holds every extent where
/// source and clone differ (nothing diverges silently). This is what lets an unflushed write wait for
/// the next commit to record its protected restore map bit (CloneGroups/CloneGroups+IO.swift, `sourceStep`).
@Suite struct CloneRestoreCrashTests {
    static let extent = CloneGroupFigureTests.extent
    static let size = CloneGroupFigureTests.size
    static let sector = 512
    static let rounds = 20

    /// Sector `index` of write `id`: self-identifying bytes (id 0 is never used).
    static func sectorBytes(write id: Int, sector index: Int) -> [UInt8] {
        var bytes = [UInt8](repeating: UInt8(truncatingIfNeeded: id &* 29 &+ index), count: sector)
        withUnsafeBytes(of: UInt32(id).littleEndian) { bytes.replaceSubrange(0..<4, with: $0) }
        withUnsafeBytes(of: UInt32(index).littleEndian) { bytes.replaceSubrange(4..<8, with: $0) }
        return bytes
    }

    @Test("protected restore, unflushed/flushed/FUA writes, power loss, resume: the contract holds")
    func unflushedWritesDuringRestore() async throws {
        let seed = SeededGenerator.seedFromEnvironment()
        try await FailureLog.run { log in
            for round in 0..<Self.rounds {
                let before = log.failures.count
                try Self.round(seed: seed &+ UInt64(round), log)
                if log.failures.count > before {
                    log.fail("seed \(seed &+ UInt64(round)) (replay with CAIRN_SEED=\(seed &+ UInt64(round)) and rounds 1)")
                    return
                }
            }
        }
    }

    static func round(seed: UInt64, _ log: FailureLog) throws {
        var random = SeededGenerator(seed: seed)
        let (media, pool, source) = try CloneGroupFigureTests.fracturedGroup(["clone"], log)
        let cloneID = try pool.volumes.id(named: "clone")
        let cloneContent = try readBytes(pool, cloneID, 0, size)
        // The source goes bad in most extents after the fracture (FUA: durable before the restore).
        for e in 0..<(size / extent) where Bool.random(using: &random) || e % 3 == 0 {
            try writeBytes(pool, source, UInt64(e * extent), pattern(UInt8(50 + e), extent), fua: true)
        }
        _ = try pool.cloneGroups.restore(named: "clone", protected: true)

        // Per sector: the writes that touched it, in order, and whether each is durable.
        var history = [[(id: Int, durable: Bool)]](repeating: [], count: size / sector)
        var nextID = 1
        for _ in 0..<(Int(random.next(upperBound: UInt64(40))) + 10) {
            switch Int(random.next(upperBound: UInt64(10))) {
            case 0..<6:
                let sectors: Int = [1, 8, 8, 16][Int(random.next(upperBound: UInt64(4)))]
                let first = Int(random.next(upperBound: UInt64(Self.size / Self.sector - sectors)))
                let fua = random.next(upperBound: UInt64(4)) == 0
                let id = nextID
                nextID += 1
                let bytes = (0..<sectors).flatMap { sectorBytes(write: id, sector: first + $0) }
                try writeBytes(pool, source, UInt64(first * sector), bytes, fua: fua)
                for s in first..<(first + sectors) { history[s].append((id, fua)) }
            case 6:
                try pool.flush()
                for s in history.indices { history[s] = history[s].map { ($0.id, true) } }
            default:
                _ = try pool.cloneGroups.runJob(clone: "clone", maxExtents: Int(random.next(upperBound: UInt64(3))) + 1)
            }
        }
        let image = media.crashImage(using: &random)
        pool.simulateProcessDeath()

        let recovered = try Pool(media: image, options: cloneTestOptions())
        defer { recovered.close() }
        if try recovered.cloneGroups.info(named: "clone").state == .restoring {
            try log.check(try recovered.cloneGroups.runJob(clone: "clone"), "the resumed restore did not finish")
        }
        try log.check(try recovered.cloneGroups.info(named: "clone").state == .fractured)
        let restored = try readBytes(recovered, source, 0, size)
        try log.check(try readBytes(recovered, cloneID, 0, size) == cloneContent, "the clone changed")
        for s in history.indices {
            let found = Array(restored[(s * sector)..<((s + 1) * sector)])
            let writes = history[s]
            let lastDurable = writes.lastIndex { $0.durable }
            // Allowed: the last durable write (or the clone's data if none), or any write after it.
            var allowed = [lastDurable.map { sectorBytes(write: writes[$0].id, sector: s) }
                ?? Array(cloneContent[(s * sector)..<((s + 1) * sector)])]
            for w in writes[((lastDurable ?? -1) + 1)...] { allowed.append(sectorBytes(write: w.id, sector: s)) }
            if !allowed.contains(found) {
                log.fail("sector \(s) (extent \(s * sector / extent)): neither the last durable write nor a later one")
                return
            }
        }
        let delta = Set(try recovered.cloneGroups.maps(clone: "clone").delta)
        for e in 0..<(size / extent) {
            let range = (e * extent)..<((e + 1) * extent)
            if restored[range] != cloneContent[range] && !delta.contains(UInt64(e)) {
                log.fail("extent \(e) differs from the clone but is not in its delta map")
            }
        }
    }
}
