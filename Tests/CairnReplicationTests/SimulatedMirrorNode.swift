@_spi(Testing) import CairnEngine
import CairnIO
import CairnTestSupport
import Foundation
import Logging
import NIOPosix

@testable import CairnReplication

/// One node of a simulated mirror pair: a pool on simulated media (a power cut keeps what a disk would:
/// synced data and a random part of the rest, some of it torn), its I/O threads, and the replication
/// layer, whose records and change maps live in a real `mirrors/` directory.
///
/// A power cut images both at one instant: every I/O thread is held first, so no job is half done, then
/// the pool's media are imaged and the directory copied. The directory keeps every write that completed
/// (the page cache survives there): the cut tests the ordering between the mirror's state and the pool's
/// data, not the mirror files' own fsyncs (`ChangeMapTests` and `AtomicFileTests` do those).
final class SimulatedMirrorNode: @unchecked Sendable {
    let label: String
    let directory: String
    let media: SimulatedMedia
    let pool: Pool
    let executor: IOExecutor
    let replication: Replication
    /// The target's listener (nil on the primary).
    private(set) var server: MirrorTargetServer?

    /// The event loops of every simulated node and link, apart from the singleton the rest of the test
    /// process shares: a real daemon has loops of its own, and another suite's work on a shared loop must
    /// not stall these nodes' frames.
    static let eventLoops = MultiThreadedEventLoopGroup(numberOfThreads: 2)

    /// A node on `media` (new, or what a power cut kept) and `directory` (holding `mirrors/`).
    init(label: String, secret: ReplicationSecret, media: SimulatedMedia, directory: String, settings tune: (inout ReplicationSettings) -> Void)
        throws
    {
        self.label = label
        self.directory = directory
        self.media = media
        var options = PoolOptions()
        // No timer commits: only FLUSH, FUA and the mirror's own flushes make data durable.
        options.commitIntervalNanoseconds = 3_600_000_000_000
        options.logger.logLevel = .critical
        pool = try Pool(media: media, options: options)
        executor = IOExecutor(threadCount: 2, queueCapacity: 1024, name: "cairn-\(label)")
        var settings = ReplicationSettings(secret: secret, node: label, group: SimulatedMirrorNode.eventLoops)
        tune(&settings)
        var logger = Logger(label: label)
        logger.logLevel = .critical
        replication = try Replication(
            pool: pool, executor: executor, dataDirectory: directory, settings: settings, logger: logger)
    }

    /// Where the nodes' `mirrors/` directories go: memory (tmpfs) where there is one. Like the pool's
    /// simulated disks, the record files must not wait for the machine's disk: with the rest of the suite
    /// writing gigabytes, a real fsync there can take tens of seconds, and an establish that waited on
    /// one went unanswered past the link's deadline.
    static let directoryRoot = FileManager.default.fileExists(atPath: "/dev/shm") ? "/dev/shm/" : NSTemporaryDirectory()

    static func newDirectory(_ label: String) throws -> String {
        let directory = directoryRoot + "cairn-\(label)-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        return directory
    }

    /// Starts the target's listener.
    func serve(secret: ReplicationSecret) async throws -> Int {
        var logger = Logger(label: label)
        logger.logLevel = .critical
        let server = try await MirrorTargetServer.start(
            host: "127.0.0.1", port: 0, service: replication.target, secret: secret,
            group: SimulatedMirrorNode.eventLoops, logger: logger)
        self.server = server
        return server.port
    }

    /// Longest wait for the I/O threads to finish the jobs they are running (a job is one engine call).
    static let holdTimeout: Double = 120

    /// Power cut now: returns what the disks kept (the media's image and a copy of `mirrors/`), and leaves
    /// this node dead: its pool refuses everything, its I/O threads take no more work (so nothing of it
    /// can reach the target again), its links are closed. `whileHeld` runs with every I/O thread held.
    func powerCut(using random: inout some RandomNumberGenerator, whileHeld: () -> Void = {}) async throws
        -> (SimulatedMedia, String)
    {
        let released = DispatchSemaphore(value: 0)
        let started = DispatchSemaphore(value: 0)
        for _ in 0..<executor.threadCount {
            try executor.submit {
                started.signal()
                released.wait()
            }
        }
        let threads = executor.threadCount
        let held = try await blocking {
            (0..<threads).allSatisfy { _ in started.wait(timeout: .now() + Self.holdTimeout) == .success }
        }
        guard held else { throw ReplicationError(.ioFailure, "\(label): an I/O job never finished (a hang)") }
        whileHeld()
        let image = media.crashImage(using: &random)
        let copy = try Self.newDirectory(label)
        try FileManager.default.copyItem(atPath: directory + "/mirrors", toPath: copy + "/mirrors")
        pool.simulateProcessDeath()
        replication.shutdown()
        // Closed to new work before the held threads go on: a retry of the dead node's mirror cannot get
        // past its reconnect (which reads the pool on these threads) to take the target over.
        let executor = self.executor
        Thread { executor.shutdown() }.start()
        while true {
            do { try executor.submit {} } catch .shutDown { break } catch {}
            usleep(200)
        }
        for _ in 0..<threads { released.signal() }
        await server?.close()
        return (image, copy)
    }

    /// Stops the node for good at the end of a run.
    func close() async {
        replication.shutdown()
        await server?.close()
        pool.close()
        let executor = self.executor
        Thread { executor.shutdown() }.start()
    }

    /// The whole volume.
    func bytes(_ volume: String, size: Int) throws -> [UInt8] {
        var bytes = [UInt8](repeating: 0xEE, count: size)
        let id = try pool.volumes.id(named: volume)
        _ = try bytes.withUnsafeMutableBytes { try pool.read(volumeID: id, offset: 0, into: $0) }
        return bytes
    }
}
