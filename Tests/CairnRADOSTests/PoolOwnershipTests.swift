@_spi(Testing) import CairnRADOS
import CairnEngine
import Foundation
import Glibc
import Testing

/// One writer per pool: a second node is refused while the owner renews; once the lease lapses, a
/// standby fences the owner before taking the pool, and the fenced owner can write nothing.
@Suite struct PoolOwnershipTests {
    static let lease = 3

    @Test func aSecondOwnerIsRefusedWhileTheLeaseIsRenewed() throws {
        let configuration = try TestCluster.configuration()
        let a = try RadosCluster(configuration)
        let b = try RadosCluster(configuration)
        let owner = try PoolOwnership.acquire(try a.ioContext(), clientAddresses: [try a.address()], leaseSeconds: Self.lease)
        defer { owner.release() }
        // Past one lease: renewal keeps it.
        usleep(useconds_t(Self.lease) * 1_500_000)
        let error = #expect(throws: EngineError.self) {
            try PoolOwnership.acquire(try b.ioContext(), clientAddresses: [try b.address()], leaseSeconds: Self.lease)
        }
        #expect(error?.code == .poolLocked)
        #expect(owner.state == .held)
    }

    @Test func aCleanReleaseLetsTheNextOwnerInWithoutFencing() throws {
        let configuration = try TestCluster.configuration()
        let a = try RadosCluster(configuration)
        let b = try RadosCluster(configuration)
        try PoolOwnership.acquire(try a.ioContext(), clientAddresses: [try a.address()], leaseSeconds: Self.lease).release()
        let next = try PoolOwnership.acquire(try b.ioContext(), clientAddresses: [try b.address()], leaseSeconds: Self.lease)
        defer { next.release() }
        // a was not fenced: it can still write.
        try a.ioContext().writeFull("probe", [1])
    }

    @Test func aStandbyFencesAHungOwnerBeforeTakingThePool() throws {
        let configuration = try TestCluster.configuration()
        let a = try RadosCluster(configuration)
        let b = try RadosCluster(configuration)
        let aIO = try a.ioContext()
        let owner = try PoolOwnership.acquire(aIO, clientAddresses: [try a.address()], leaseSeconds: Self.lease)
        owner.stopRenewingWithoutReleasing()
        let start = Date()
        var messages: [String] = []
        let successor = try #require(
            try PoolOwnership.waitToAcquire(
                try b.ioContext(), clientAddresses: [try b.address()], leaseSeconds: Self.lease,
                pollNanoseconds: 100_000_000, cancelled: { Date().timeIntervalSince(start) > 60 },
                log: { messages.append($0) }))
        defer { successor.release() }
        #expect(messages.contains { $0.contains("fencing") })
        let error = #expect(throws: RadosError.self) { try aIO.writeFull("probe", [1]) }
        #expect(error?.isBlocklisted == true)
        #expect(try b.ioContext().size(of: "probe") == nil)
    }
}
