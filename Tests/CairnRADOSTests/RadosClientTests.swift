import CairnRADOS
import Foundation
import Glibc
import Testing

/// The librados client against the real cluster: objects, asynchronous I/O, locks, fencing, status.
@Suite struct RadosClientTests {
    @Test func asynchronousWriteReadStatRemove() throws {
        let io = try RadosCluster(try TestCluster.configuration()).ioContext()
        let data = (0..<10_000).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        let write = try data.withUnsafeBytes { try io.aioWrite("object", $0, at: 100) }
        try write.wait()
        var back = [UInt8](repeating: 0, count: 10_100)
        let read = try back.withUnsafeMutableBytes { try io.aioRead("object", into: $0, at: 0) }
        #expect(try read.wait() == 10_100)
        #expect(Array(back[100...]) == data)
        #expect(back[..<100].allSatisfy { $0 == 0 })
        let stat = try io.aioStat("object")
        try stat.wait()
        #expect(stat.size == 10_100)

        let pattern: [UInt8] = [1, 2, 3, 4]
        try pattern.withUnsafeBytes { try io.aioWriteSame("object", pattern: $0, length: 4096, at: 0) }.wait()
        try io.aioZero("object", at: 4, length: 4).wait()
        let head = try #require(try io.read("object", limit: 12))
        #expect(head == [1, 2, 3, 4, 0, 0, 0, 0, 1, 2, 3, 4])

        try io.aioRemove("object").wait()
        #expect(try io.size(of: "object") == nil)
        let missing = try back.withUnsafeMutableBytes { try io.aioRead("object", into: $0, at: 0) }
        #expect(throws: RadosError.self) { try missing.wait() }
    }

    @Test func attributesAndTruncate() throws {
        let io = try RadosCluster(try TestCluster.configuration()).ioContext()
        #expect(try io.xattr("meta", "size") == nil)
        try io.setXattr("meta", "size", "12345")
        #expect(try io.xattr("meta", "size") == "12345")
        try io.writeFull("data", [UInt8](repeating: 9, count: 1000))
        try io.truncate("data", to: 10)
        #expect(try io.size(of: "data") == 10)
    }

    @Test func unreachableClusterIsAnErrorWithinTheTimeout() throws {
        // A monitor address nothing listens on: connect must fail after the timeout, not hang.
        let directory = NSTemporaryDirectory() + "cairn-rados-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let conf = directory + "/ceph.conf"
        try "[global]\nmon host = [v2:127.0.0.1:9]\n".write(toFile: conf, atomically: true, encoding: .utf8)
        var configuration = try TestCluster.configuration()
        configuration.confPath = conf
        configuration.timeoutSeconds = 3
        let error = #expect(throws: RadosError.self) { try RadosCluster(configuration) }
        #expect(error?.operation == "connect")
    }

    @Test func missingConfigurationIsAClearError() throws {
        var configuration = try TestCluster.configuration()
        configuration.confPath = "/nonexistent/ceph.conf"
        let error = #expect(throws: RadosError.self) { try RadosCluster(configuration) }
        #expect(error?.description.contains("/nonexistent/ceph.conf") == true)
    }

    @Test func exclusiveLockBlocksOthersAndBlocklistFencesTheHolder() throws {
        let configuration = try TestCluster.configuration()
        let a = try RadosCluster(configuration).ioContext()
        let b = try RadosCluster(configuration).ioContext()
        try a.lockExclusive("header", name: "owner", cookie: "a", description: "test", seconds: 30, renew: false)
        try a.lockExclusive("header", name: "owner", cookie: "a", description: "test", seconds: 30, renew: true)
        let busy = #expect(throws: RadosError.self) {
            try b.lockExclusive("header", name: "owner", cookie: "b", description: "test", seconds: 30, renew: false)
        }
        #expect(busy?.errno == EBUSY)
        let lockers = try b.lockers("header", name: "owner")
        #expect(lockers.count == 1)
        #expect(lockers.first?.cookie == "a")
        #expect(lockers.first?.address == (try a.cluster.address()))

        // Fence a, then take its lock: a can no longer write.
        try b.cluster.blocklist(address: lockers[0].address)
        // b's next operation carries the OSD map with the blocklist: the OSD applies it from then on.
        try b.breakLock("header", name: "owner", locker: lockers[0])
        try b.lockExclusive("header", name: "owner", cookie: "b", description: "test", seconds: 30, renew: false)
        let fenced = #expect(throws: RadosError.self) {
            try [UInt8](repeating: 1, count: 4096).withUnsafeBytes { try a.aioWrite("data", $0, at: 0) }.wait()
        }
        #expect(fenced?.isBlocklisted == true)
        #expect(try b.size(of: "data") == nil)
    }

    @Test func clusterStatus() throws {
        let cluster = try RadosCluster(try TestCluster.configuration())
        let usage = try cluster.usage()
        #expect(usage.totalBytes > 0)
        #expect(usage.availableBytes <= usage.totalBytes)
        #expect(["HEALTH_OK", "HEALTH_WARN", "HEALTH_ERR"].contains(try cluster.health()))
    }
}
