import NBDClient
import Testing

@Suite("NBD URIs")
struct NBDURITests {
    @Test("host, port, export; IPv6 in brackets; percent escapes; the default port")
    func parses() throws {
        #expect(
            try NBDURI(parsing: "nbd://127.0.0.1:10810/disk0")
                == NBDURI(host: "127.0.0.1", port: 10810, exportName: "disk0"))
        #expect(
            try NBDURI(parsing: "nbd://example.org/vol@snap") == NBDURI(host: "example.org", exportName: "vol@snap"))
        #expect(try NBDURI(parsing: "nbd://[::1]:9000/a%20b") == NBDURI(host: "::1", port: 9000, exportName: "a b"))
        #expect(try NBDURI(parsing: "nbd://host") == NBDURI(host: "host", exportName: ""))
        #expect(NBDURI(host: "::1", port: 1, exportName: "x").description == "nbd://[::1]:1/x")
    }

    @Test("nbds: TLS, a user, libnbd's tls-certificates and tls-psk-file")
    func parsesTLS() throws {
        let certificates = try NBDURI(parsing: "nbds://127.0.0.1:10810/disk0?tls-certificates=/etc/pki/x%20y")
        #expect(certificates.tls && certificates.tlsCertificates == "/etc/pki/x y" && certificates.exportName == "disk0")
        #expect(certificates.description == "nbds://127.0.0.1:10810/disk0")
        let psk = try NBDURI(parsing: "nbds://alice@h/v?tls-psk-file=/k.psk")
        #expect(psk.user == "alice" && psk.host == "h" && psk.tlsPSKFile == "/k.psk" && psk.port == 10809)
        #expect(try !NBDURI(parsing: "nbd://h/x").tls)
    }

    @Test("other schemes, missing hosts, bad ports and bad escapes are refused")
    func refuses() {
        for text in [
            "nbd+unix:///x?socket=/s", "nbd://h/x?tls-certificates=/d", "nbds://h/x?unknown=1",
            "nbds://h/x?tls-certificates", "nbd+tls://h/x", "nbd:///x", "nbd://h:0/x", "nbd://h:99999/x", "nbd://h:p/x",
            "nbd://[::1/x", "nbd://h/%zz", "nbd://h/%c3",
        ] {
            #expect(throws: NBDClientError.self, "\(text)") { try NBDURI(parsing: text) }
        }
    }
}
