@_spi(Testing) import CairnRADOS
import CairnEngine
import CairnTestSupport
import Foundation
import Logging
import Testing

/// A node that lost the pool must not believe a metadata commit landed: the ceph SQLite VFS reports
/// success for writes the OSDs refused, so every commit to the store is confirmed through the pool's
/// lease (`OwnedMetadataStore`). Here another client takes the lease away (breaking the owner's lock,
/// as a takeover does after fencing); the next commit to the store fails and the pool fail-stops.
/// (Fencing the VFS client itself would fence it for every test in this process: the takeover interop
/// test does that with real daemons.)
@Suite struct RadosFencedCommitTests {
    static func options() -> PoolOptions {
        var options = PoolOptions()
        options.commitIntervalNanoseconds = 3_600_000_000_000
        options.logger.logLevel = .critical
        return options
    }

    /// What the pool did after the lease was taken away (checked on the test's task).
    struct Outcome: Sendable {
        var deleteError: EngineError?
        var failedBefore: Bool
        var failedAfter: Bool
        var ownership: PoolOwnership.State
        var laterWriteRefused: Bool
    }

    @Test func aCommitAfterThePoolWasTakenFailsAndStopsThePool() async throws {
        let configuration = try TestCluster.configuration()
        let outcome = try await blocking { () throws -> Outcome in
            let media = try RadosMedia(configuration, leaseSeconds: 30)
            let pool = try Pool(media: media, options: Self.options())
            defer {
                pool.close()
                media.ownership.release()
            }
            try pool.volumes.create(name: "kept", size: 1 << 20, chunkSize: 65536, preserveStore: nil)
            try pool.volumes.create(name: "gone", size: 1 << 20, chunkSize: 65536, preserveStore: nil)
            try pool.flush()
            let failedBefore = pool.hasFailed

            // Another client breaks the owner's lock: the lease is no longer this node's.
            let other = try RadosCluster(configuration).ioContext()
            guard let owner = try PoolOwnership.currentOwner(other) else {
                throw EngineError(.notFound, "the pool has no owner after it was opened")
            }
            try other.breakLock(PoolOwnership.headerObject, name: PoolOwnership.lockName, locker: owner)

            // Deleting a volume commits to the store directly (not through the metadata journal).
            var deleteError: EngineError?
            do { try pool.volumes.delete(name: "gone", force: true) } catch let error as EngineError {
                deleteError = error
            }
            // Fail-stop: later writes are refused too.
            let data = [UInt8](repeating: 1, count: 4096)
            let id = try pool.volumes.id(named: "kept")
            let laterWriteRefused: Bool
            do {
                try data.withUnsafeBytes { try pool.write(volumeID: id, offset: 0, source: .bytes($0), fua: true) }
                laterWriteRefused = false
            } catch {
                laterWriteRefused = true
            }
            return Outcome(
                deleteError: deleteError, failedBefore: failedBefore, failedAfter: pool.hasFailed,
                ownership: media.ownership.state, laterWriteRefused: laterWriteRefused)
        }
        #expect(!outcome.failedBefore)
        #expect(outcome.deleteError?.code == .ioFailure, "\(String(describing: outcome.deleteError))")
        #expect(outcome.failedAfter, "the pool did not fail-stop")
        guard case .lost(let reason) = outcome.ownership else {
            Issue.record("ownership is \(outcome.ownership), not lost")
            return
        }
        #expect(reason.contains("lease"), "\(reason)")
        #expect(outcome.laterWriteRefused)
    }
}
