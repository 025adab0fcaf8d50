import CairnEngine
import CairnIO
import Foundation
import Synchronization

/// The one-writer rule for a pool in RADOS. The serving node holds an exclusive, expiring lock on the
/// pool's header object and renews it; the header's `owner` attribute names the librados clients the
/// owner writes through. A node taking over waits until the lock is free (released or expired), then
/// blocklists every client the last owner recorded *before* it takes the lock: from then on the OSDs
/// refuse the old owner's operations (EBLOCKLISTED), so it cannot write a byte even if it wakes up.
public final class PoolOwnership: @unchecked Sendable {
    /// The object whose lock says who serves the pool (in the pool's RADOS pool and namespace).
    public static let headerObject = "cairn.header"
    /// The header object's lock whose holder serves the pool.
    public static let lockName = "cairn.owner"
    static let ownerAttribute = "owner"

    /// Default lease: an owner that stops renewing loses the pool this long after its last renewal.
    /// Long enough to ride out a slow monitor or OSD (librados' own op timeout is 30 s at most
    /// here), short enough that a standby takes over quickly.
    public static let defaultLeaseSeconds = 15
    /// Renewals per lease: three may fail (a slow OSD) before the lease is at risk.
    static let renewalsPerLease = 4

    public enum State: Sendable, Equatable {
        case held
        /// The pool was taken away: another node fenced this one, or renewal failed for a whole lease.
        case lost(String)
        case released
    }

    let io: RadosIOContext
    public let cookie: String
    public let leaseSeconds: Int
    private let stateBox = Mutex<State>(.held)
    private let onLost = Mutex<[@Sendable (String) -> Void]>([])
    private let stop = Monitor()
    private var stopRequested = false
    private var renewer: Thread?

    /// Who owns the pool now, or nil when nobody holds an unexpired lease.
    public static func currentOwner(_ io: RadosIOContext) throws -> RadosLocker? {
        try io.lockers(headerObject, name: lockName).first
    }

    /// Takes the pool: fails with `.poolLocked` while another node's lease is live; fences the last
    /// owner's clients (`fence`) before locking. `clientAddresses` are this node's librados clients.
    /// `fencedLocks`: other locks (object, lock name) the last owner may still hold (the SQLite VFS's): once
    /// it is fenced, its holds on them are broken so this node need not wait for them to expire.
    public static func acquire(
        _ io: RadosIOContext, clientAddresses: [String], leaseSeconds: Int = defaultLeaseSeconds,
        fencedLocks: [(object: String, lock: String)] = [], log: (String) -> Void = { _ in }
    ) throws -> PoolOwnership {
        if let owner = try currentOwner(io) {
            throw EngineError(
                .poolLocked,
                "the pool in \(io.cluster.configuration.location) is served by \(owner.client) at \(owner.address); "
                    + "stop it, or start this node with --standby to take over when its lease expires")
        }
        let previous = try OwnerRecord.read(io)
        if let previous, !previous.addresses.isEmpty {
            for address in previous.addresses where !clientAddresses.contains(address) {
                log("fencing the previous owner's client \(address) (host \(previous.host), pid \(previous.pid))")
                try io.cluster.blocklist(address: address)
            }
            for (object, lock) in fencedLocks {
                for locker in try io.lockers(object, name: lock) where previous.addresses.contains(locker.address) {
                    log("breaking the fenced client's lock \(lock) on \(object)")
                    try io.breakLock(object, name: lock, locker: locker)
                }
            }
        }
        let ownership = PoolOwnership(io: io, leaseSeconds: leaseSeconds)
        do {
            try io.lockExclusive(
                headerObject, name: lockName, cookie: ownership.cookie, description: "cairn pool owner",
                seconds: leaseSeconds, renew: false)
        } catch let error as RadosError where error.errno == EBUSY || error.errno == EEXIST {
            throw EngineError(.poolLocked, "another node took the pool in \(io.cluster.configuration.location) first")
        }
        try OwnerRecord(addresses: clientAddresses).write(io)
        ownership.startRenewing()
        return ownership
    }

    /// A standby's wait: polls until nobody holds a live lease, then takes the pool as `acquire` does
    /// (fencing the last owner first). Returns nil if `cancelled` turns true first.
    public static func waitToAcquire(
        _ io: RadosIOContext, clientAddresses: [String], leaseSeconds: Int = defaultLeaseSeconds,
        fencedLocks: [(object: String, lock: String)] = [], pollNanoseconds: UInt64 = 500_000_000, cancelled: () -> Bool = { false }, log: (String) -> Void = { _ in }
    ) throws -> PoolOwnership? {
        var announced: String?
        while !cancelled() {
            if let owner = try currentOwner(io) {
                if announced != owner.client {
                    log("standing by: \(owner.client) at \(owner.address) serves the pool")
                    announced = owner.client
                }
            } else {
                do {
                    return try acquire(
                        io, clientAddresses: clientAddresses, leaseSeconds: leaseSeconds, fencedLocks: fencedLocks,
                        log: log)
                } catch let error as EngineError where error.code == .poolLocked {
                    // Another standby was faster, or the owner renewed just in time: keep waiting.
                }
            }
            usleep(useconds_t(pollNanoseconds / 1000))
        }
        return nil
    }

    /// Stops renewing without giving the pool up, as a node that hangs would (tests).
    @_spi(Testing) public func stopRenewingWithoutReleasing() {
        stop.withLock { stopRequested = true }
        stop.broadcast()
    }

    init(io: RadosIOContext, leaseSeconds: Int) {
        self.io = io
        self.leaseSeconds = leaseSeconds
        self.cookie = UUID().uuidString.lowercased()
    }

    public var state: State { stateBox.withLock { $0 } }

    /// Adds a client this node writes through (the SQLite VFS's) to the owner record, so that a node
    /// taking over fences it too.
    public func recordClient(_ address: String) throws {
        var record = try OwnerRecord.read(io) ?? OwnerRecord(addresses: [])
        guard !record.addresses.contains(address) else { return }
        record.addresses.append(address)
        try record.write(io)
    }

    /// Calls `handler` (once, on the renewal thread) when the pool is taken away from this node.
    public func whenLost(_ handler: @escaping @Sendable (String) -> Void) {
        let reason: String? = stateBox.withLock { if case .lost(let reason) = $0 { reason } else { nil } }
        if let reason { handler(reason); return }
        onLost.withLock { $0.append(handler) }
    }

    /// Gives the pool up cleanly: clears the owner record (a successor has nobody to fence) and unlocks.
    public func release() {
        stop.withLock { stopRequested = true }
        stop.broadcast()
        let wasHeld = stateBox.withLock { state -> Bool in
            defer { if state == .held { state = .released } }
            return state == .held
        }
        guard wasHeld else { return }
        try? OwnerRecord(addresses: []).write(io)
        try? io.unlock(Self.headerObject, name: Self.lockName, cookie: cookie)
    }

    /// Throws unless this node still holds the pool as far as it knows (no I/O: what the renewals found).
    public func requireHeld() throws {
        switch state {
        case .held: return
        case .lost(let reason): throw EngineError(.ioFailure, "this node no longer owns the pool: \(reason)")
        case .released: throw EngineError(.closed, "this node released the pool")
        }
    }

    /// Proves that this node still owns the pool, with one synchronous renewal of the lease through
    /// this node's own client; throws (and, when the pool was taken, marks it lost) otherwise.
    ///
    /// Why this proves a metadata commit landed: a standby fences only once the lease has lapsed at the
    /// header's OSD, and a renewal (`MUST_RENEW`) fails from that moment on; so a renewal that succeeds
    /// after the commit's writes were answered means they were answered before any fencing began.
    public func confirm() throws {
        try requireHeld()
        do {
            try renew()
        } catch let error as EngineError {
            throw error
        } catch {
            throw EngineError(.ioFailure, "cannot confirm this node still owns the pool", cause: error)
        }
    }

    /// One renewal of the lease. When the pool was taken (this client fenced, or the lock expired or
    /// held by another node) marks it lost and throws an `EngineError` saying why; any other failure
    /// (a slow OSD) is rethrown as it is.
    private func renew() throws {
        do {
            try io.lockExclusive(
                Self.headerObject, name: Self.lockName, cookie: cookie, description: "cairn pool owner",
                seconds: leaseSeconds, renew: true)
        } catch let error as RadosError where error.isBlocklisted {
            throw taken("this node was fenced: another node took over the pool (\(error))", cause: error)
        } catch let error as RadosError where error.errno == ENOENT || error.errno == EBUSY {
            throw taken("the pool's lease expired and another node holds it now (\(error))", cause: error)
        }
    }

    private func taken(_ reason: String, cause: RadosError) -> EngineError {
        lose(reason)
        return EngineError(.ioFailure, reason, cause: cause)
    }

    private func startRenewing() {
        let thread = Thread { [self] in renewLoop() }
        thread.name = "cairn.rados.lease"
        renewer = thread
        thread.start()
    }

    private func renewLoop() {
        let interval = Double(leaseSeconds) / Double(Self.renewalsPerLease)
        var lastRenewal = Date()
        while true {
            let stopping = stop.withLock { () -> Bool in
                if !stopRequested { stop.wait(timeoutNanoseconds: UInt64(interval * 1e9)) }
                return stopRequested
            }
            if stopping { return }
            do {
                try renew()
                lastRenewal = Date()
            } catch is EngineError {
                return  // taken: `renew` marked the pool lost
            } catch {
                if Date().timeIntervalSince(lastRenewal) >= Double(leaseSeconds) {
                    lose("the pool's lease could not be renewed for \(leaseSeconds) s: \(error)")
                    return
                }
            }
        }
    }

    private func lose(_ reason: String) {
        let handlers: [@Sendable (String) -> Void] = stateBox.withLock { state in
            guard state == .held else { return [] }
            state = .lost(reason)
            return onLost.withLock { handlers in defer { handlers.removeAll() }; return handlers }
        }
        for handler in handlers { handler(reason) }
    }
}
