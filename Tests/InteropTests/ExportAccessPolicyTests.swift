import CairnDaemon
import NBDServer
import Testing

/// The access rules' matching, without a daemon: addresses, identities, patterns and the grant.
@Suite struct ExportAccessPolicyTests {
    @Test func addressRanges() throws {
        let local = try #require(AddressRange("127.0.0.0/8"))
        #expect(local.contains("127.0.0.1") && local.contains("127.255.0.9"))
        #expect(!local.contains("128.0.0.1") && !local.contains("::1") && !local.contains("garbage"))
        #expect(local.contains("::ffff:127.0.0.1"), "IPv4-mapped IPv6 counts as IPv4")
        let one = try #require(AddressRange("192.168.1.7"))
        #expect(one.contains("192.168.1.7") && !one.contains("192.168.1.8"))
        let odd = try #require(AddressRange("10.0.0.0/12"))
        #expect(odd.contains("10.15.255.255") && !odd.contains("10.16.0.0"))
        let v6 = try #require(AddressRange("fd00::/8"))
        #expect(v6.contains("fd12::1") && !v6.contains("fe80::1") && !v6.contains("10.0.0.1"))
        #expect(try #require(AddressRange("0.0.0.0/0")).contains("8.8.8.8"))
        for bad in ["", "300.1.1.1", "10.0.0.0/33", "::1/129", "10.0.0.0/-1", "10.0.0.0/x", "host.example"] {
            #expect(AddressRange(bad) == nil, "\(bad) parsed")
        }
    }

    @Test func grants() throws {
        let policy = ExportAccessPolicy(rules: [
            .init(exports: ["pub*"], readOnly: true),
            .init(exports: ["vault", "pub-rw"], clients: ["CN=backup-host"], readOnly: false),
            .init(exports: ["*"], addresses: [try #require(AddressRange("10.0.0.0/8"))], readOnly: true),
        ])
        let anonymous = NBDSessionInfo(id: 1, remoteAddress: "127.0.0.1:1", remoteIP: "127.0.0.1")
        let backup = NBDSessionInfo(
            id: 2, remoteAddress: "127.0.0.1:2", remoteIP: "127.0.0.1", clientIdentity: "CN=backup-host", tls: true)
        let inside = NBDSessionInfo(id: 3, remoteAddress: "10.1.2.3:3", remoteIP: "10.1.2.3")
        #expect(policy.grant(export: "pub1", session: anonymous) == .readOnly)
        #expect(policy.grant(export: "pub1@snap", session: anonymous) == .readOnly, "a snapshot follows its volume")
        #expect(policy.grant(export: "vault", session: anonymous) == nil)
        #expect(policy.grant(export: "vault", session: backup) == .readWrite)
        #expect(policy.grant(export: "pub-rw", session: backup) == .readWrite, "read-write wins over read-only")
        #expect(policy.grant(export: "pub-rw", session: anonymous) == .readOnly)
        #expect(policy.grant(export: "other", session: anonymous) == nil)
        #expect(policy.grant(export: "other", session: inside) == .readOnly)
        #expect(policy.grant(export: "vault", session: inside) == .readOnly)
    }
}
