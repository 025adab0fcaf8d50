import CairnDaemon
import CairnEngine
import Foundation
import Logging

/// A real daemon inside the fuzzing process, on a scratch pool with one volume (`fuzz`, with a
/// snapshot `base` so copy-on-write paths run): the NBD targets talk to it over loopback, so every
/// input goes through the real listener, handshake, transmission and engine. A trap anywhere in it is
/// the fuzzer's finding.
final class FuzzDaemon: Sendable {
    static let volumeName = "fuzz"
    static let snapshotName = "base"
    /// Small enough that offsets past the end are easy for the fuzzer to reach.
    static let volumeSize: UInt64 = 16 << 20
    /// Longest a started daemon may take to write its runtime file.
    static let startDeadline: TimeInterval = 120

    let nbdPort: UInt16

    /// Started on first use: one daemon per process.
    static let shared: FuzzDaemon = {
        do {
            return try FuzzDaemon()
        } catch {
            fatalError("cannot start the daemon for fuzzing: \(error)")
        }
    }()

    private init() throws {
        Self.quietLogging()
        let directory = FuzzScratch.directory + "/pool"
        try Self.preparePool(in: directory)

        var configuration = DaemonConfiguration(dataDirectory: directory)
        configuration.nbdPort = 0
        configuration.iscsiPort = nil
        // An input that stops mid-handshake is closed by EOF, not by this timer; keep it short anyway.
        configuration.nbdHandshakeTimeout = 5
        let runtimeFile = DaemonConfiguration.runtimeFile(dataDirectory: directory)
        Task.detached {
            do {
                try await Daemon.run(configuration, logger: Logger(label: "cairn.fuzz"))
            } catch {
                fatalError("the daemon under fuzzing stopped: \(error)")
            }
        }
        let deadline = Date().addingTimeInterval(Self.startDeadline)
        while true {
            if let data = FileManager.default.contents(atPath: runtimeFile),
                let info = try? JSONDecoder().decode(Daemon.RuntimeInfo.self, from: data),
                let port = info.nbd.split(separator: ":").last.flatMap({ UInt16($0) })
            {
                nbdPort = port
                return
            }
            guard Date() < deadline else { fatalError("the daemon wrote no runtime file within \(Self.startDeadline) s") }
            usleep(20_000)
        }
    }

    /// The pool is released (its lock with it) before the daemon opens it.
    private static func preparePool(in directory: String) throws {
        let pool = try Pool.open(directory: directory)
        defer { pool.close() }
        let volume = try pool.volumes.create(name: Self.volumeName, size: Self.volumeSize)
        let pattern = [UInt8](repeating: 0xA5, count: 256 << 10)
        try pattern.withUnsafeBytes { bytes in
            try pool.write(volumeID: volume.id, offset: 1 << 20, source: .bytes(bytes), fua: true)
        }
        _ = try pool.snapshots.create(volume: Self.volumeName, name: Self.snapshotName)
    }

    /// Connection logs at info level for every input would drown the fuzzer's own output.
    private static func quietLogging() {
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = .critical
            return handler
        }
    }
}
