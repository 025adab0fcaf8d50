import CairnBackup
import CairnEngine
import Foundation
import Logging

/// The seed's bank (para. [0003]) on a volume: accounts whose balances move by transactions, each
/// transaction a debit and a credit in different blocks plus a ledger record between them, each on a
/// session of its own. A state is consistent when the balances sum to the initial total; a ledger
/// record says whether a transaction is in an image.
struct BankLayout {
    static let accounts = 16
    static let initialBalance: UInt64 = 1000
    /// Accounts sit in different range-lock blocks (64 KiB) so that transactions overlap in time.
    static func accountOffset(_ account: Int) -> UInt64 { UInt64(account) * (64 << 10) }
    static let ledgerBase: UInt64 = 4 << 20
    static func ledgerOffset(_ transaction: Int) -> UInt64 { ledgerBase + UInt64(transaction) * 4096 }
    static let volumeSize: UInt64 = 8 << 20
    static let maximumTransactions = 1000
}

/// One NBD session, as the daemon's export drives it: every request passes the volume's route.
final class TestSession: @unchecked Sendable {
    let id: UInt64
    let pool: Pool
    let volumeID: UInt64
    let coordinator: BackupCoordinator
    let route: VolumeRoute

    init(id: UInt64, pool: Pool, volumeID: UInt64, coordinator: BackupCoordinator) {
        self.id = id
        self.pool = pool
        self.volumeID = volumeID
        self.coordinator = coordinator
        route = coordinator.route(volumeID: volumeID)
        coordinator.sessionAttached(volumeID: volumeID, session: id, address: "test-\(id)")
    }

    func close() { coordinator.sessionDetached(volumeID: volumeID, session: id) }

    func read(_ offset: UInt64, _ length: Int) throws -> [UInt8] {
        var bytes = [UInt8](repeating: 0xEE, count: length)
        try bytes.withUnsafeMutableBytes { buffer in
            _ = try route.perform({ try pool.read(volumeID: volumeID, offset: offset, into: buffer) }) {
                try $0.read(session: id, offset: offset, into: buffer)
            }
        }
        return bytes
    }

    /// COPY_AND_WRITE of the 64 KiB chunk at `source` to `target`, `buffer` at `bufferOffset` in it.
    func copyAndWrite(source: UInt64, target: UInt64, buffer: [UInt8], bufferOffset: UInt32, copySize: UInt32 = 65536)
        throws
    {
        try buffer.withUnsafeBytes { raw in
            let command = CopyAndWrite(
                source: source, target: target, copySize: copySize, buffer: raw, bufferOffset: bufferOffset)
            try route.perform({
                try pool.copyAndWrite(
                    volumeID: volumeID, source: source, target: target, copySize: copySize, buffer: raw,
                    bufferOffset: bufferOffset, fua: false)
            }) { try $0.copyAndWrite(session: id, command, fua: false) }
        }
    }

    /// `base:allocation` as this session's image reads.
    func allocation(
        _ offset: UInt64, _ length: UInt64, maximumExtents: Int = SnapshotCatalog.maximumAllocationExtents
    ) throws
        -> [AllocationExtent]
    {
        try route.perform({
            try pool.snapshots.allocationExtents(
                volumeID: volumeID, offset: offset, length: length, maximumExtents: maximumExtents)
        }) { try $0.allocation(session: id, offset: offset, length: length, maximumExtents: maximumExtents) }
    }

    /// A FUA write, as the daemon completes one: the commit it still owes before the reply.
    func writeFUA(_ offset: UInt64, _ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { raw in
            let owed = try route.perform({
                try pool.writeDeferringCommit(volumeID: volumeID, offset: offset, source: .bytes(raw), fua: true)
            }) { try $0.write(session: id, offset: offset, source: .bytes(raw), fua: true) }
            if owed { try pool.flush() }
        }
    }

    func trim(_ offset: UInt64, _ length: UInt64) throws {
        try route.perform({ try pool.discard(volumeID: volumeID, offset: offset, length: length, mode: .trim) }) {
            try $0.discard(session: id, offset: offset, length: length, mode: .trim, fua: false)
        }
    }

    func write(_ offset: UInt64, _ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { raw in
            try route.perform({ try pool.write(volumeID: volumeID, offset: offset, source: .bytes(raw), fua: false) }) {
                _ = try $0.write(session: id, offset: offset, source: .bytes(raw), fua: false)
            }
        }
    }
}

func encode(_ values: [UInt64], size: Int = 4096) -> [UInt8] {
    var bytes = [UInt8](repeating: 0, count: size)
    for (index, value) in values.enumerated() {
        withUnsafeBytes(of: value.littleEndian) { bytes.replaceSubrange(index * 8..<index * 8 + 8, with: $0) }
    }
    return bytes
}

func decode(_ bytes: [UInt8], at index: Int) -> UInt64 {
    bytes[index * 8..<index * 8 + 8].reversed().reduce(0) { $0 << 8 | UInt64($1) }
}

/// A fresh directory under the system temp dir.
func temporaryDirectory() -> String {
    let path = NSTemporaryDirectory() + "cairn-backup-test-" + UUID().uuidString
    try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

/// A pool in a fresh temporary directory with a backup coordinator on it: the setup of every
/// engine-level backup test. `close()` (deferred by the caller) closes the pool and removes the directory.
final class BackupTestPool {
    let directory: String
    let pool: Pool
    let coordinator: BackupCoordinator

    init() throws {
        directory = temporaryDirectory()
        var options = PoolOptions()
        options.logger = testLogger()
        do {
            pool = try Pool.open(directory: directory + "/pool", options: options)
        } catch {
            try? FileManager.default.removeItem(atPath: directory)
            throw error
        }
        do {
            coordinator = try BackupCoordinator(pool: pool, dataDirectory: directory + "/pool", logger: testLogger())
        } catch {
            pool.close()
            try? FileManager.default.removeItem(atPath: directory)
            throw error
        }
    }

    func close() {
        pool.close()
        try? FileManager.default.removeItem(atPath: directory)
    }
}

func testLogger() -> Logger {
    var logger = Logger(label: "cairn.backup.test")
    logger.logLevel = .warning
    return logger
}


/// Starts a backup and returns once it has split (`--method mirror` answers while building its copy).
func startSplit(_ coordinator: BackupCoordinator, _ request: BackupRequest) throws -> BackupStatus {
    let started = try coordinator.start(request)
    let deadline = Date().addingTimeInterval(60)
    while Date() < deadline {
        let status = try coordinator.status(id: started.record.id)
        if status.record.phase != .establishing { return status }
        Thread.sleep(forTimeInterval: 0.005)
    }
    throw EngineError(.busy, "backup \(started.record.id) did not split")
}

/// Waits (polling) until the backup has finished; returns its record.
func waitForBackup(_ coordinator: BackupCoordinator, _ id: String, seconds: Double = 60) throws -> BackupRecord {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        let record = try coordinator.status(id: id).record
        if record.phase == .succeeded || record.phase == .failed { return record }
        Thread.sleep(forTimeInterval: 0.02)
    }
    throw EngineError(.busy, "backup \(id) did not finish in \(seconds) s")
}
