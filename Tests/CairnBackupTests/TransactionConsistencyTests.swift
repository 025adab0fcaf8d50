import CairnArchive
@testable import CairnBackup
import CairnEngine
import CairnTestSupport
import Foundation
import Synchronization
import Testing

/// The issue's consistency test in the seed's spirit, against the engine and the one-way mirror
/// (no network): several "clients" run bank transactions, each on its own session; a backup starts in
/// the middle; the restored archive must hold every transaction that had finished before the backup
/// was asked for, none that started after it split, and no half transaction (the balances sum to the
/// initial total). The live volume must hold every transaction (no acknowledged write lost).
@Suite(.serialized) struct TransactionConsistencyTests {
    struct Transaction {
        var number: Int
        var attached: ContinuousClock.Instant
        var detached: ContinuousClock.Instant
    }

    @Test(arguments: BackupMethod.allCases, [UInt64(1), 2, 3])
    func backupHoldsWholeTransactionsOnly(method: BackupMethod, seed: UInt64) throws {
        let fixture = try BackupTestPool()
        defer { fixture.close() }
        let (directory, pool, coordinator) = (fixture.directory, fixture.pool, fixture.coordinator)
        let volume = try pool.volumes.create(name: "bank", size: BankLayout.volumeSize)
        for account in 0..<BankLayout.accounts {
            try encode([BankLayout.initialBalance]).withUnsafeBytes {
                try pool.write(
                    volumeID: volume.id, offset: BankLayout.accountOffset(account), source: .bytes($0), fua: false)
            }
        }

        // The application's own locks (the seed's type (a) locks): a transaction holds its two
        // accounts from before it starts until it has finished.
        let accountLocks = (0..<BankLayout.accounts).map { _ in NSLock() }
        let nextTransaction = Atomic<Int>(0)
        let nextSession = Atomic<UInt64>(1)
        let stop = Atomic<Bool>(false)
        let log = Mutex<[Transaction]>([])
        let failures = Mutex<[String]>([])
        let workers = 4
        let done = DispatchGroup()
        for worker in 0..<workers {
            done.enter()
            let thread = Thread {
                defer { done.leave() }
                var random = SeededGenerator(seed: seed &* 1000 &+ UInt64(worker))
                while !stop.load(ordering: .relaxed) {
                    let number = nextTransaction.wrappingAdd(1, ordering: .relaxed).oldValue
                    guard number < BankLayout.maximumTransactions else { return }
                    let from = Int.random(in: 0..<BankLayout.accounts, using: &random)
                    var to = Int.random(in: 0..<BankLayout.accounts - 1, using: &random)
                    if to >= from { to += 1 }
                    let amount = UInt64.random(in: 1...10, using: &random)
                    let pause = UInt32.random(in: 200...2000, using: &random)
                    for account in [from, to].sorted() { accountLocks[account].lock() }
                    defer { for account in [from, to] { accountLocks[account].unlock() } }
                    let attached = ContinuousClock.now
                    let session = TestSession(
                        id: nextSession.wrappingAdd(1, ordering: .relaxed).oldValue, pool: pool, volumeID: volume.id,
                        coordinator: coordinator)
                    do {
                        let fromBalance = decode(try session.read(BankLayout.accountOffset(from), 4096), at: 0)
                        let toBalance = decode(try session.read(BankLayout.accountOffset(to), 4096), at: 0)
                        try session.write(BankLayout.accountOffset(from), encode([fromBalance - amount]))
                        usleep(pause)
                        try session.write(
                            BankLayout.ledgerOffset(number),
                            encode([UInt64(number + 1), UInt64(from), UInt64(to), amount]))
                        usleep(pause)
                        try session.write(BankLayout.accountOffset(to), encode([toBalance + amount]))
                    } catch {
                        failures.withLock { $0.append("transaction \(number): \(error)") }
                    }
                    session.close()
                    let detached = ContinuousClock.now
                    log.withLock { $0.append(Transaction(number: number, attached: attached, detached: detached)) }
                }
            }
            thread.start()
        }

        // Transactions finish before T (waited for, not slept for: a loaded machine may not run any
        // within a fixed pause).
        waitUntil { !log.withLock { $0.isEmpty } }
        // One transaction certainly in flight at T: debit before the split, credit after it. Its session
        // is on A, so the backup must hold it whole.
        let straddling = nextTransaction.wrappingAdd(1, ordering: .relaxed).oldValue
        for account in [0, 1] { accountLocks[account].lock() }
        let long = TestSession(
            id: nextSession.wrappingAdd(1, ordering: .relaxed).oldValue, pool: pool, volumeID: volume.id,
            coordinator: coordinator)
        let longFrom = decode(try long.read(BankLayout.accountOffset(0), 4096), at: 0)
        let longTo = decode(try long.read(BankLayout.accountOffset(1), 4096), at: 0)
        try long.write(BankLayout.accountOffset(0), encode([longFrom - 5]))
        let archive = directory + "/bank.cbk"
        let asked = ContinuousClock.now
        let started = try startSplit(coordinator, BackupRequest(volume: "bank", archivePath: archive, method: method))
        let split = ContinuousClock.now
        try long.write(BankLayout.ledgerOffset(straddling), encode([UInt64(straddling + 1), 0, 1, 5]))
        try long.write(BankLayout.accountOffset(1), encode([longTo + 5]))
        long.close()
        for account in [0, 1] { accountLocks[account].unlock() }
        // ... and sessions opened after T run whole transactions on B.
        waitUntil { log.withLock { $0.contains { $0.attached > split } } }
        stop.store(true, ordering: .relaxed)
        // A deadline, so a stuck worker fails the test instead of hanging the run.
        try #require(done.wait(timeout: .now() + 300) == .success, "seed \(seed): the workers did not stop")
        #expect(failures.withLock { $0 }.isEmpty, "seed \(seed): \(failures.withLock { $0 })")

        let record = try waitForBackup(coordinator, started.record.id)
        #expect(record.phase == .succeeded, "seed \(seed): \(record.message ?? "")")
        #expect(record.drain == "drained")
        #expect((record.sessionsAtSplit ?? 0) > 0, "seed \(seed): the backup split with transactions in flight")
        #expect((try? pool.volumes.info(named: record.imageVolume)) == nil, "image A is discarded")

        _ = try BackupRestorer(pool: pool).restore(paths: [archive], to: "restored", force: false)
        let restored = try pool.volumes.id(named: "restored")
        let transactions = log.withLock { $0 }
        #expect(transactions.contains { $0.detached < asked } && transactions.contains { $0.attached > split })
        for (volumeID, what) in [(restored, "restored archive"), (volume.id, "live volume")] {
            var total: UInt64 = 0
            for account in 0..<BankLayout.accounts {
                total += decode(try readBytes(pool, volumeID, BankLayout.accountOffset(account)), at: 0)
            }
            #expect(
                total == UInt64(BankLayout.accounts) * BankLayout.initialBalance,
                "\(method) seed \(seed): the \(what) holds a half transaction (total \(total))")
            let straddled = decode(try readBytes(pool, volumeID, BankLayout.ledgerOffset(straddling)), at: 0)
            #expect(straddled == UInt64(straddling + 1), "\(method) seed \(seed): the transaction in flight at T is missing from the \(what)")
            for transaction in transactions {
                let present = decode(try readBytes(pool, volumeID, BankLayout.ledgerOffset(transaction.number)), at: 0) != 0
                if volumeID == volume.id || transaction.detached < asked {
                    #expect(present, "\(method) seed \(seed): transaction \(transaction.number) missing from the \(what)")
                } else if transaction.attached > split {
                    #expect(!present, "\(method) seed \(seed): transaction \(transaction.number) started after T is in the backup")
                }
            }
        }
    }

    @Test(arguments: BackupMethod.allCases)
    func sealAndTimeoutFreezeImageAWithSessionsStillOnIt(method: BackupMethod) throws {
        let fixture = try BackupTestPool()
        defer { fixture.close() }
        let (directory, pool, coordinator) = (fixture.directory, fixture.pool, fixture.coordinator)
        let volume = try pool.volumes.create(name: "v", size: 1 << 20)
        let old = TestSession(id: 1, pool: pool, volumeID: volume.id, coordinator: coordinator)
        try old.write(0, [UInt8](repeating: 1, count: 4096))

        let sealed = try startSplit(coordinator, BackupRequest(volume: "v", archivePath: directory + "/a.cbk", method: method))
        #expect(sealed.sessionsOnA.keys.sorted() == [1])
        // A new session lands on B: its write is not in A. The old session's write reaches both.
        let new = TestSession(id: 2, pool: pool, volumeID: volume.id, coordinator: coordinator)
        try new.write(8192, [UInt8](repeating: 2, count: 4096))
        try old.write(4096, [UInt8](repeating: 3, count: 4096))
        #expect(try new.read(4096, 4096) == [UInt8](repeating: 3, count: 4096), "B sees A's write")
        #expect(try old.read(8192, 4096) == [UInt8](repeating: 0, count: 4096), "A never sees B's write")
        _ = try coordinator.seal(id: sealed.record.id)
        let record = try waitForBackup(coordinator, sealed.record.id)
        #expect(record.phase == .succeeded && record.drain == "sealed")
        #expect(record.sessionsLeftOnA?.count == 1)
        // After the freeze the old session is on B with everyone else.
        #expect(try old.read(8192, 4096) == [UInt8](repeating: 2, count: 4096))

        let timed = try startSplit(
            coordinator,
            BackupRequest(volume: "v", archivePath: directory + "/b.cbk", method: method, drainTimeoutSeconds: 0.3))
        let second = try waitForBackup(coordinator, timed.record.id)
        #expect(second.phase == .succeeded && second.drain == "timeout")
        old.close()
        new.close()

        _ = try BackupRestorer(pool: pool).restore(paths: [directory + "/a.cbk"], to: "r", force: false)
        let r = try pool.volumes.id(named: "r")
        #expect(try readBytes(pool, r, 0, 4096) == [UInt8](repeating: 1, count: 4096))
        #expect(try readBytes(pool, r, 4096, 4096) == [UInt8](repeating: 3, count: 4096))
        #expect(try readBytes(pool, r, 8192, 4096) == [UInt8](repeating: 0, count: 4096))
    }

    @Test func incrementalArchivesRestoreAsAChain() throws {
        let fixture = try BackupTestPool()
        defer { fixture.close() }
        let (directory, pool, coordinator) = (fixture.directory, fixture.pool, fixture.coordinator)
        let volume = try pool.volumes.create(name: "v", size: 4 << 20)
        try writeBytes(pool, volume.id, 0, [UInt8](repeating: 1, count: 1 << 20))
        let full = try startSplit(coordinator, BackupRequest(volume: "v", archivePath: directory + "/0.cbk"))
        #expect(try waitForBackup(coordinator, full.record.id).phase == .succeeded)
        try writeBytes(pool, volume.id, 65536, [UInt8](repeating: 2, count: 4096))
        try pool.discard(volumeID: volume.id, offset: 512 << 10, length: 128 << 10, mode: .trim)
        try writeBytes(pool, volume.id, 3 << 20, [UInt8](repeating: 3, count: 8192))
        let increment = try startSplit(
            coordinator,
            BackupRequest(volume: "v", archivePath: directory + "/1.cbk", sinceArchive: directory + "/0.cbk"))
        let record = try waitForBackup(coordinator, increment.record.id)
        #expect(record.phase == .succeeded, "\(record.message ?? "")")
        #expect((record.dataBytes ?? .max) <= 64 << 10, "an increment carries what changed, not the volume")

        // Out of order, or missing its base: refused, and nothing is created.
        #expect(throws: EngineError.self) {
            try BackupRestorer(pool: pool).restore(paths: [directory + "/1.cbk"], to: "bad", force: false)
        }
        #expect((try? pool.volumes.info(named: "bad")) == nil)
        _ = try BackupRestorer(pool: pool).restore(
            paths: [directory + "/0.cbk", directory + "/1.cbk"], to: "r", force: false)
        let r = try pool.volumes.id(named: "r")
        #expect(try readBytes(pool, r, 0, 4 << 20) == readBytes(pool, volume.id, 0, 4 << 20))
        // An existing volume is overwritten only with force.
        #expect(throws: EngineError.self) {
            try BackupRestorer(pool: pool).restore(paths: [directory + "/0.cbk"], to: "r", force: false)
        }
        _ = try BackupRestorer(pool: pool).restore(paths: [directory + "/0.cbk"], to: "r", force: true)
        #expect(try readBytes(pool, r, 65536, 4096) == [UInt8](repeating: 1, count: 4096))
        #expect(try readBytes(pool, r, 3 << 20, 4096) == [UInt8](repeating: 0, count: 4096))
    }
}

func readBytes(_ pool: Pool, _ volume: UInt64, _ offset: UInt64, _ length: Int = 4096) throws -> [UInt8] {
    var bytes = [UInt8](repeating: 0xEE, count: length)
    _ = try bytes.withUnsafeMutableBytes { try pool.read(volumeID: volume, offset: offset, into: $0) }
    return bytes
}

func writeBytes(_ pool: Pool, _ volume: UInt64, _ offset: UInt64, _ bytes: [UInt8]) throws {
    try bytes.withUnsafeBytes { try pool.write(volumeID: volume, offset: offset, source: .bytes($0), fua: false) }
}

/// Polls until `condition` holds, up to a bound that only catches a hang (the expectations after it then
/// say what is missing).
func waitUntil(_ condition: () -> Bool) {
    let deadline = Date().addingTimeInterval(60)
    while !condition() && Date() < deadline { Thread.sleep(forTimeInterval: 0.01) }
}
