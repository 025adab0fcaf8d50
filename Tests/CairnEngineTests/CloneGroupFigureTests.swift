@_spi(Testing) import CairnEngine
import CairnTestSupport
import InteropSupport
import Testing

/// Options for clone-group tests: no timer commits, and jobs driven by the test (`cloneGroups.runJob`).
func cloneTestOptions() -> PoolOptions {
    var options = testOptions()
    options.runCloneJobsInBackground = false
    return options
}

/// Failures of a test body that runs on its own thread (`blocking`): engine tests must not hold Swift
/// concurrency's cooperative threads, which the interop suites' daemon launches and waits need.
final class FailureLog: @unchecked Sendable {
    // @unchecked: used by one thread at a time (the test body, then the test after it returned).
    private(set) var failures: [String] = []

    func check(_ condition: @autoclosure () throws -> Bool, _ message: @autoclosure () -> String = "", line: Int = #line)
        throws
    {
        if try !condition() { failures.append("line \(line): \(message())") }
    }

    func fail(_ message: String, line: Int = #line) { failures.append("line \(line): \(message)") }

    /// Runs `body` on its own thread and records its failures in the calling test.
    static func run(_ body: @escaping @Sendable (FailureLog) throws -> Void) async throws {
        let failures = try await blocking { () throws -> [String] in
            let log = FailureLog()
            try body(log)
            return log.failures
        }
        for failure in failures { Issue.record(Comment(rawValue: failure)) }
    }
}

/// `bytes` with `patch` written at `offset`.
func overlay(_ bytes: [UInt8], _ offset: Int, _ patch: [UInt8]) -> [UInt8] {
    var result = bytes
    result.replaceSubrange(offset..<(offset + patch.count), with: patch)
    return result
}

/// The clone-group design's figures as tests (docs/ARCHITECTURE.md names the document): a protected
/// restore with copy on demand (figs. 5–6), and the failure scenario (figs. 7–9) where recovery fills the
/// restoring clone's delta map from the group's persistent delta map and brings back bits for extents the
/// host wrote during the restore.
@Suite struct CloneGroupFigureTests {
    static let extent = 64 << 10
    static let size = 16 * extent

    /// Source "src" full of pattern 1, with fractured clones `names` identical to it.
    static func fracturedGroup(_ names: [String], _ log: FailureLog) throws -> (SimulatedMedia, Pool, UInt64) {
        let media = SimulatedMedia()
        let pool = try Pool(media: media, options: cloneTestOptions())
        let source = try pool.volumes.create(name: "src", size: UInt64(size), chunkSize: 64 << 10).id
        try writeBytes(pool, source, 0, pattern(1, size))
        for name in names {
            _ = try pool.cloneGroups.add(source: "src", name: name, extentSize: UInt64(extent))
            try log.check(try pool.cloneGroups.runJob(clone: name))
            try log.check(try pool.cloneGroups.info(named: name).state == .synchronized)
            try pool.cloneGroups.fracture(named: name)
            try log.check(try pool.cloneGroups.maps(clone: name).delta.isEmpty)
        }
        return (media, pool, source)
    }

    @Test("figs. 5-6: writes needing no COD, writes queued behind a COD, the restore map becomes the delta map")
    func protectedRestoreWithCopyOnDemand() async throws { try await FailureLog.run(Self.protectedRestoreWithCopyOnDemand) }

    static func protectedRestoreWithCopyOnDemand(_ log: FailureLog) throws {
        let (_, pool, source) = try Self.fracturedGroup(["clone"], log)
        let clone = try pool.volumes.id(named: "clone")
        let e = Self.extent
        // The source goes bad in extents 4 and 7 after the fracture.
        try writeBytes(pool, source, UInt64(4 * e + 100), pattern(9, 5000))
        try writeBytes(pool, source, UInt64(7 * e), pattern(9, e))
        try log.check(try pool.cloneGroups.maps(clone: "clone").delta == [4, 7])

        _ = try pool.cloneGroups.restore(named: "clone", protected: true)
        // Write 1 (extent 0): bit 0 is clear in the delta map, no COD; bit 0 set in the restore map.
        try writeBytes(pool, source, 0, pattern(2, 4096))
        var maps = try pool.cloneGroups.maps(clone: "clone")
        try log.check(maps.delta == [4, 7])
        try log.check(maps.restoreMap == [0])
        try log.check(try pool.cloneGroups.copyOnDemandCounters(source: "src").copied == 0)
        // Writes 2 and 3 (extents 4 and 7): COD first, then the bits move to the restore map.
        try writeBytes(pool, source, UInt64(4 * e + 8192), pattern(3, 4096))
        try writeBytes(pool, source, UInt64(7 * e + 4096), pattern(4, 4096))
        maps = try pool.cloneGroups.maps(clone: "clone")
        try log.check(maps.delta.isEmpty)
        try log.check(maps.restoreMap == [0, 4, 7])
        try log.check(try pool.cloneGroups.copyOnDemandCounters(source: "src").copied == 2)

        var expected = overlay(pattern(1, Self.size), 0, pattern(2, 4096))
        expected = overlay(expected, 4 * e + 8192, pattern(3, 4096))
        expected = overlay(expected, 7 * e + 4096, pattern(4, 4096))
        try log.check(try readBytes(pool, source, 0, Self.size) == expected)

        try log.check(try pool.cloneGroups.runJob(clone: "clone"))
        let info = try pool.cloneGroups.info(named: "clone")
        try log.check(info.state == .fractured)
        try log.check(try pool.cloneGroups.maps(clone: "clone").delta == [0, 4, 7])
        try log.check(try readBytes(pool, source, 0, Self.size) == expected)
        try log.check(try readBytes(pool, clone, 0, Self.size) == pattern(1, Self.size), "the clone was modified")
        try log.check(try pool.checker.check().isHealthy)
        pool.close()
    }

    @Test("a read of a not-yet-copied extent is served with the clone's data")
    func readsDuringProtectedRestoreSeeTheClone() async throws { try await FailureLog.run(Self.readsDuringProtectedRestoreSeeTheClone) }

    static func readsDuringProtectedRestoreSeeTheClone(_ log: FailureLog) throws {
        let (_, pool, source) = try Self.fracturedGroup(["clone"], log)
        try writeBytes(pool, source, 0, pattern(7, Self.size))
        _ = try pool.cloneGroups.restore(named: "clone", protected: true)
        try log.check(try readBytes(pool, source, UInt64(5 * Self.extent + 512), 4096)
            == Array(pattern(1, Self.size)[(5 * Self.extent + 512)..<(5 * Self.extent + 4608)]))
        try log.check(try pool.cloneGroups.copyOnDemandCounters(source: "src").copied == 1)
        try log.check(try pool.cloneGroups.runJob(clone: "clone"))
        try log.check(try readBytes(pool, source, 0, Self.size) == pattern(1, Self.size))
        try log.check(try pool.cloneGroups.maps(clone: "clone").delta.isEmpty)
        pool.close()
    }

    @Test("figs. 7-9: bits that recovery brings back never let the sync engine or a COD overwrite a host write")
    func recoveryDoesNotOverwriteHostWrites() async throws { try await FailureLog.run(Self.recoveryDoesNotOverwriteHostWrites) }

    static func recoveryDoesNotOverwriteHostWrites(_ log: FailureLog) throws {
        let (media, pool, source) = try Self.fracturedGroup(["clone1", "clone2"], log)
        let e = Self.extent
        // Clone 1 differs from the source in extent 7 (it was written after the fracture).
        let clone1 = try pool.volumes.id(named: "clone1")
        try writeBytes(pool, clone1, UInt64(7 * e), pattern(5, e))
        try log.check(try pool.cloneGroups.maps(clone: "clone1").delta == [7])
        try log.check(try pool.cloneGroups.maps(clone: "clone2").delta.isEmpty)

        _ = try pool.cloneGroups.restore(named: "clone1", protected: true)
        // Host write 1 spans extents 6 and 7: bit 6 is clear (no COD), bit 7 is set (COD from clone 1).
        let write1 = pattern(6, 8192)
        try writeBytes(pool, source, UInt64(7 * e - 4096), write1, fua: true)
        var maps = try pool.cloneGroups.maps(clone: "clone1")
        try log.check(maps.delta.isEmpty)
        try log.check(maps.restoreMap == [6, 7])
        try log.check(try pool.cloneGroups.maps(clone: "clone2").delta == [6, 7], "clone 2's delta map tracks the write (fig. 8)")
        try log.check(maps.persistent == [6, 7], "the persistent delta map holds clone 2's bits")

        // Power cut, recovery.
        var random = SeededGenerator(seed: 7)
        let image = media.crashImage(using: &random)
        pool.simulateProcessDeath()
        let recovered = try Pool(media: image, options: cloneTestOptions())
        maps = try recovered.cloneGroups.maps(clone: "clone1")
        try log.check(maps.delta == [6, 7], "recovery fills clone 1's delta map from the shared persistent map (fig. 9)")
        try log.check(maps.restoreMap == [6, 7])
        try log.check(try recovered.cloneGroups.info(named: "clone1").state == .restoring)

        // Host write 2 to the same extents after the restore resumed: no COD may run.
        let write2 = pattern(8, 4096)
        try writeBytes(recovered, source, UInt64(6 * e + 4096), write2, fua: true)
        try log.check(try recovered.cloneGroups.copyOnDemandCounters(source: "src").copied == 0)
        try log.check(try recovered.cloneGroups.runJob(clone: "clone1"))

        var expected = overlay(pattern(1, Self.size), 7 * e, pattern(5, e))  // clone 1's image
        expected = overlay(expected, 7 * e - 4096, write1)
        expected = overlay(expected, 6 * e + 4096, write2)
        try log.check(try readBytes(recovered, source, 0, Self.size) == expected)
        try log.check(
            try readBytes(recovered, clone1, 0, Self.size) == overlay(pattern(1, Self.size), 7 * e, pattern(5, e)),
            "the clone was modified")
        try log.check(try recovered.cloneGroups.info(named: "clone1").state == .fractured)
        try log.check(try recovered.cloneGroups.maps(clone: "clone1").delta == [6, 7])
        try log.check(try recovered.checker.check().isHealthy)
        recovered.close()
    }

    @Test("write-intent: the bit that records a write is durable before its data, flushed or not")
    func writeIntentSurvivesPowerLoss() async throws { try await FailureLog.run(Self.writeIntentSurvivesPowerLoss) }

    static func writeIntentSurvivesPowerLoss(_ log: FailureLog) throws {
        let (media, pool, source) = try Self.fracturedGroup(["fractured", "mirrored"], log)
        _ = try pool.cloneGroups.sync(named: "mirrored")
        try log.check(try pool.cloneGroups.runJob(clone: "mirrored"))
        let clone = try pool.volumes.id(named: "fractured")
        // No FUA, no FLUSH: the data may or may not reach the disk, the maps must know either way.
        try writeBytes(pool, source, UInt64(3 * Self.extent + 512), pattern(4, 4096))
        try writeBytes(pool, clone, UInt64(9 * Self.extent), pattern(5, 512))
        var random = SeededGenerator(seed: 3)
        let image = media.crashImage(using: &random)
        pool.simulateProcessDeath()
        let recovered = try Pool(media: image, options: cloneTestOptions())
        try log.check(try recovered.cloneGroups.maps(clone: "fractured").delta.contains(3))
        try log.check(try recovered.cloneGroups.maps(clone: "fractured").delta.contains(9))
        // The mirrored clone may have missed its half of the write: it is synchronizing again over it.
        try log.check(try recovered.cloneGroups.info(named: "mirrored").state == .synchronizing)
        try log.check(try recovered.cloneGroups.maps(clone: "mirrored").delta.contains(3))
        try log.check(try recovered.cloneGroups.runJob(clone: "mirrored"))
        let mirrored = try recovered.volumes.id(named: "mirrored")
        try log.check(try readBytes(recovered, mirrored, 0, Self.size) == readBytes(recovered, source, 0, Self.size))
        recovered.close()
    }

    @Test("every refusal says why and changes nothing")
    func refusals() async throws { try await FailureLog.run(Self.refusals) }

    static func refusals(_ log: FailureLog) throws {
        let (_, pool, source) = try Self.fracturedGroup(["clone1", "clone2"], log)
        func refused(_ code: EngineError.Code, _ text: String, _ body: () throws -> Void) throws {
            do {
                try body()
                log.fail("expected a refusal containing '\(text)'")
            } catch let error as EngineError {
                try log.check(error.code == code, "\(error)")
                try log.check(error.message.contains(text), "\(error.message)")
            } catch {
                log.fail("unexpected \(error)")
            }
        }
        try refused(.busy, "already fractured") { try pool.cloneGroups.fracture(named: "clone1") }
        try refused(.invalidArgument, "--protected") { _ = try pool.cloneGroups.restore(named: "clone1", protected: false) }
        try refused(.invalidArgument, "not supported") { _ = try pool.cloneGroups.add(source: "src", name: "x", pool: "/elsewhere") }
        try refused(.invalidArgument, "extents") { _ = try pool.cloneGroups.add(source: "src", name: "x", extentSize: 4 << 10) }
        try refused(.notFound, "not a clone") { _ = try pool.cloneGroups.sync(named: "src") }
        try refused(.busy, "source of clone") { try pool.volumes.delete(name: "src", force: true) }
        try refused(.busy, "clone group") { try pool.volumes.resize(name: "clone1", size: 2 << 20) }

        _ = try pool.cloneGroups.restore(named: "clone1", protected: true)
        try refused(.busy, "is running") { _ = try pool.cloneGroups.sync(named: "clone1") }
        try refused(.busy, "one restore at a time") { _ = try pool.cloneGroups.restore(named: "clone2", protected: true) }
        try refused(.busy, "one restore at a time") { _ = try pool.cloneGroups.sync(named: "clone2") }
        try refused(.readOnly, "only a fractured clone") {
            try writeBytes(pool, try pool.volumes.id(named: "clone1"), 0, pattern(1, 4096))
        }
        try refused(.busy, "running") { try pool.cloneGroups.remove(named: "clone1") }
        try log.check(try pool.cloneGroups.info(named: "clone2").state == .fractured)
        try log.check(try pool.cloneGroups.runJob(clone: "clone1"))
        try log.check(try pool.cloneGroups.info(named: "clone1").state == .fractured)

        _ = try pool.cloneGroups.sync(named: "clone2")
        try refused(.busy, "fracture it first") { _ = try pool.cloneGroups.reverseSync(named: "clone1") }
        try log.check(try pool.cloneGroups.runJob(clone: "clone2"))
        try refused(.busy, "synchronized (mirrored)") { _ = try pool.cloneGroups.reverseSync(named: "clone2") }
        try pool.cloneGroups.remove(named: "clone2", deleteVolume: true)
        try log.check(try pool.cloneGroups.list().map(\.name) == ["clone1"])
        try writeBytes(pool, source, 0, pattern(3, 4096))
        pool.close()
    }
}
