import Foundation
import InteropSupport
import Testing

/// NBD over TLS (STARTTLS with X.509) with the real clients: libnbd's nbdinfo, qemu-io and qemu-img
/// (both GnuTLS), certificates made by openssl for each test.
@Suite("NBD over TLS")
struct TLSDaemonTests {
    /// A CA, a server certificate for 127.0.0.1 and a client certificate, laid out the way the clients
    /// want them: `client/` holds only the CA (libnbd `tls-certificates=`, qemu `tls-creds-x509,dir=`),
    /// `withcert/` adds client-cert.pem and client-key.pem.
    struct Certificates {
        let directory: String
        var serverCert: String { directory + "/server-cert.pem" }
        var serverKey: String { directory + "/server-key.pem" }
        var ca: String { directory + "/ca-cert.pem" }
        var clientOnlyCA: String { directory + "/client" }
        var clientWithCert: String { directory + "/withcert" }

        init(in scratch: ScratchDirectory) async throws {
            directory = scratch.path
            let script = """
                set -e
                cd "$1"
                openssl req -x509 -newkey rsa:2048 -nodes -keyout ca-key.pem -out ca-cert.pem -days 2 -subj "/CN=Cairn test CA"
                openssl req -newkey rsa:2048 -nodes -keyout server-key.pem -out server.csr -subj "/CN=localhost"
                printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\nextendedKeyUsage=serverAuth\\n' > server.ext
                openssl x509 -req -in server.csr -CA ca-cert.pem -CAkey ca-key.pem -CAcreateserial -out server-cert.pem -days 2 -extfile server.ext
                openssl req -newkey rsa:2048 -nodes -keyout client-key.pem -out client.csr -subj "/CN=backup-host"
                printf 'extendedKeyUsage=clientAuth\\n' > client.ext
                openssl x509 -req -in client.csr -CA ca-cert.pem -CAkey ca-key.pem -CAcreateserial -out client-cert.pem -days 2 -extfile client.ext
                mkdir client withcert
                cp ca-cert.pem client/
                cp ca-cert.pem client-cert.pem client-key.pem withcert/
                """
            let made = try await runTool("/bin/sh", ["-c", script, "sh", directory])
            try #require(made.status == 0, "openssl: \(made)")
        }
    }

    static func tlsURI(_ daemon: TestDaemon, _ export: String, certificates: String) -> String {
        "nbds://127.0.0.1:\(daemon.nbdPort)/\(export)?tls-certificates=\(certificates)"
    }

    /// qemu's way: a tls-creds-x509 object and the NBD driver's tls-creds option.
    static func qemuArguments(_ daemon: TestDaemon, _ export: String, certificates: String) -> [String] {
        [
            "--object", "tls-creds-x509,id=tls0,dir=\(certificates),endpoint=client", "--image-opts",
            "driver=nbd,host=127.0.0.1,port=\(daemon.nbdPort),export=\(export),tls-creds=tls0",
        ]
    }

    @Test("required: nbdinfo, qemu-io and qemu-img work over TLS; a plaintext client is refused")
    func required() async throws {
        let scratch = try ScratchDirectory("tls")
        defer { scratch.remove() }
        let certificates = try await Certificates(in: scratch)
        try await withDaemon(extraArguments: [
            "--tls", "required", "--tls-cert", certificates.serverCert, "--tls-key", certificates.serverKey,
        ]) { daemon in
            try await daemon.createVolume("secure", "16M")
            let info = try await runTool(
                Tools.nbdinfo, [Self.tlsURI(daemon, "secure", certificates: certificates.clientOnlyCA)])
            #expect(info.status == 0 && info.stdout.contains("with TLS") && info.stdout.contains("16777216"), "\(info)")
            let list = try await runTool(
                Tools.nbdinfo, ["--list", Self.tlsURI(daemon, "", certificates: certificates.clientOnlyCA)])
            #expect(list.status == 0 && list.stdout.contains("secure"), "\(list)")

            let io = try await runTool(
                Tools.qemuIO,
                Self.qemuArguments(daemon, "secure", certificates: certificates.clientOnlyCA) + [
                    "-c", "write -P 0x5a 0 1m", "-c", "write -P 0x5b 8m 64k", "-c", "flush", "-c", "read -P 0x5a 0 1m",
                ])
            #expect(io.status == 0 && !io.stdout.contains("failed") && !io.stderr.contains("failed"), "\(io)")
            let image = try await runTool(
                Tools.qemuImg, ["info"] + Self.qemuArguments(daemon, "secure", certificates: certificates.clientOnlyCA))
            #expect(image.status == 0 && image.stdout.contains("16 MiB"), "\(image)")

            // Plaintext: every option but STARTTLS gets ERR_TLS_REQD, so the client cannot get in.
            let plain = try await runTool(Tools.nbdinfo, [daemon.uri("secure")])
            #expect(plain.status != 0, "a plaintext client got in: \(plain)")
            let plainList = try await runTool(Tools.nbdinfo, ["--list", daemon.uri("")])
            #expect(plainList.status != 0 || !plainList.stdout.contains("secure"), "LIST leaked exports: \(plainList)")
            // A second TLS session reads back what the first one wrote.
            let check = try await runTool(
                Tools.qemuIO,
                Self.qemuArguments(daemon, "secure", certificates: certificates.clientOnlyCA) + [
                    "-r", "-c", "read -P 0x5b 8m 64k", "-c", "read -P 0 9m 1m",
                ])
            #expect(check.status == 0 && !check.stdout.contains("failed"), "\(check)")
        }
    }

    @Test("a client CA: clients without a certificate from it are refused, clients with one get in")
    func clientCertificates() async throws {
        let scratch = try ScratchDirectory("tls-ca")
        defer { scratch.remove() }
        let certificates = try await Certificates(in: scratch)
        try await withDaemon(extraArguments: [
            "--tls-cert", certificates.serverCert, "--tls-key", certificates.serverKey, "--tls-ca", certificates.ca,
        ]) { daemon in
            try await daemon.createVolume("vault", "4M")
            let anonymous = try await runTool(
                Tools.nbdinfo, ["--size", Self.tlsURI(daemon, "vault", certificates: certificates.clientOnlyCA)])
            #expect(anonymous.status != 0, "a client without a certificate got in: \(anonymous)")
            let known = try await runTool(
                Tools.nbdinfo, ["--size", Self.tlsURI(daemon, "vault", certificates: certificates.clientWithCert)])
            #expect(known.status == 0 && known.stdout.contains("4194304"), "\(known)")
            let io = try await runTool(
                Tools.qemuIO,
                Self.qemuArguments(daemon, "vault", certificates: certificates.clientWithCert) + [
                    "-c", "write -P 0x77 0 64k", "-c", "read -P 0x77 0 64k",
                ])
            #expect(io.status == 0 && !io.stdout.contains("failed"), "\(io)")
        }
    }

    @Test(
        "selective: TLS is offered, plaintext works except for TLS-only exports (ERR_TLS_REQD, not listed); bad TLS settings stop the daemon with the reason"
    )
    func selectiveAndBadSettings() async throws {
        let scratch = try ScratchDirectory("tls-sel")
        defer { scratch.remove() }
        let certificates = try await Certificates(in: scratch)
        try await withDaemon(extraArguments: [
            "--tls", "selective", "--tls-cert", certificates.serverCert, "--tls-key", certificates.serverKey,
            "--tls-export", "secret*",
        ]) { daemon in
            try await daemon.createVolume("either", "1M")
            try await daemon.createVolume("secret-db", "2M")
            let secure = try await runTool(
                Tools.nbdinfo, [Self.tlsURI(daemon, "either", certificates: certificates.clientOnlyCA)])
            #expect(secure.status == 0 && secure.stdout.contains("with TLS"), "\(secure)")
            let plain = try await runTool(Tools.nbdinfo, [daemon.uri("either")])
            #expect(plain.status == 0 && plain.stdout.contains("without TLS"), "\(plain)")

            // The TLS-only export: plaintext INFO/GO get ERR_TLS_REQD, LIST leaves it out; over TLS it works.
            let plainSecret = try await runTool(Tools.nbdinfo, ["--size", daemon.uri("secret-db")])
            #expect(plainSecret.status != 0 && plainSecret.stderr.contains("TLS"), "\(plainSecret)")
            let plainIO = try await runTool(
                Tools.qemuIO, ["-f", "raw", "-c", "write -P 0x11 0 4k", "nbd://127.0.0.1:\(daemon.nbdPort)/secret-db"])
            #expect(plainIO.status != 0 || plainIO.stderr.contains("TLS"), "\(plainIO)")
            let tlsIO = try await runTool(
                Tools.qemuIO,
                Self.qemuArguments(daemon, "secret-db", certificates: certificates.clientOnlyCA) + [
                    "-c", "write -P 0x22 0 64k", "-c", "read -P 0x22 0 64k",
                ])
            #expect(tlsIO.status == 0 && !tlsIO.stdout.contains("failed"), "\(tlsIO)")
            let plainList = try await runTool(Tools.nbdinfo, ["--list", "--json", daemon.uri("")])
            #expect(
                plainList.status == 0 && plainList.stdout.contains("\"either\"")
                    && !plainList.stdout.contains("secret-db"), "\(plainList)")
            let tlsList = try await runTool(
                Tools.nbdinfo, ["--list", "--json", Self.tlsURI(daemon, "", certificates: certificates.clientOnlyCA)])
            #expect(tlsList.status == 0 && tlsList.stdout.contains("secret-db"), "\(tlsList)")
            // The API names the scheme a client needs.
            let shown = try await daemon.cliOK(["volume", "show", "secret-db", "--json"])
            #expect(shown.stdout.contains(#"nbds:\/\/127.0.0.1"#), "\(shown)")
            let either = try await daemon.cliOK(["volume", "show", "either", "--json"])
            #expect(either.stdout.contains(#""nbd:\/\/127.0.0.1"#), "\(either)")
        }
        let noKey = try await runTool(
            TestDaemon.binary, ["serve", "--tls", "required", "--tls-cert", certificates.serverCert, "--check-config"])
        #expect(noKey.status == 64 && noKey.stderr.contains("private key"), "\(noKey)")
        let onlyWithoutSelective = try await runTool(
            TestDaemon.binary,
            [
                "serve", "--tls", "required", "--tls-cert", certificates.serverCert, "--tls-key", certificates.serverKey,
                "--tls-export", "secret*", "--check-config",
            ])
        #expect(
            onlyWithoutSelective.status == 64 && onlyWithoutSelective.stderr.contains("selective"),
            "\(onlyWithoutSelective)")
        // A key that does not belong to the certificate: the daemon says so and exits.
        let directory = TestDaemon.makeDataDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let mismatched = try await runTool(
            TestDaemon.binary,
            [
                "serve", "--data-dir", directory, "--nbd-port", "0", "--tls-cert", certificates.serverCert,
                "--tls-key", certificates.directory + "/client-key.pem",
            ], timeout: 60)
        #expect(mismatched.status != 0 && mismatched.stderr.contains("TLS"), "\(mismatched)")
    }

    @Test("access rules: LIST shows only what a client may open, others are refused like unknown names, read-only grants refuse writes")
    func accessRules() async throws {
        let scratch = try ScratchDirectory("tls-acl")
        defer { scratch.remove() }
        let certificates = try await Certificates(in: scratch)
        let config = scratch.file("cairn.yaml")
        try """
            tls: {mode: required, cert: \(certificates.serverCert), key: \(certificates.serverKey), ca: \(certificates.ca), client_certificates: optional}
            access:
              - {exports: ["pub*"], mode: read-only}
              - {exports: ["vault"], clients: ["CN=backup-host"]}
              - {exports: ["far-*"], addresses: ["10.0.0.0/8"]}
            """.write(toFile: config, atomically: true, encoding: .utf8)
        try await withDaemon(extraArguments: ["--config", config]) { daemon in
            for name in ["pub1", "vault", "far-away"] { try await daemon.createVolume(name, "1M") }
            func list(_ certificatesDirectory: String) async throws -> ProcessResult {
                try await runTool(Tools.nbdinfo, ["--list", Self.tlsURI(daemon, "", certificates: certificatesDirectory)])
            }
            let anonymous = try await list(certificates.clientOnlyCA)
            #expect(anonymous.stdout.contains("pub1"), "\(anonymous)")
            #expect(!anonymous.stdout.contains("vault") && !anonymous.stdout.contains("far-away"), "\(anonymous)")
            let known = try await list(certificates.clientWithCert)
            #expect(known.stdout.contains("pub1") && known.stdout.contains("vault"), "\(known)")
            #expect(!known.stdout.contains("far-away"), "\(known)")

            // Refused exactly like a name that does not exist.
            let hidden = try await runTool(
                Tools.nbdinfo, [Self.tlsURI(daemon, "vault", certificates: certificates.clientOnlyCA)])
            let unknown = try await runTool(
                Tools.nbdinfo, [Self.tlsURI(daemon, "no-such-volume", certificates: certificates.clientOnlyCA)])
            #expect(hidden.status != 0 && unknown.status != 0)
            #expect(
                hidden.stderr.replacingOccurrences(of: "vault", with: "X")
                    == unknown.stderr.replacingOccurrences(of: "no-such-volume", with: "X"),
                "\(hidden)\n\(unknown)")

            // Read-write where a rule grants it, read-only where only a read-only rule matches.
            let vaultIO = try await runTool(
                Tools.qemuIO,
                Self.qemuArguments(daemon, "vault", certificates: certificates.clientWithCert) + [
                    "-c", "write -P 0x42 0 64k", "-c", "read -P 0x42 0 64k",
                ])
            #expect(vaultIO.status == 0 && !vaultIO.stdout.contains("failed"), "\(vaultIO)")
            let pubInfo = try await runTool(Tools.nbdinfo, [Self.tlsURI(daemon, "pub1", certificates: certificates.clientWithCert)])
            #expect(pubInfo.stdout.contains("is_read_only: true"), "\(pubInfo)")
            let pubWrite = try await runTool(
                Tools.qemuIO,
                Self.qemuArguments(daemon, "pub1", certificates: certificates.clientWithCert) + [
                    "-c", "write -P 0x43 0 64k",
                ])
            #expect(pubWrite.status != 0 || pubWrite.stdout.contains("failed") || pubWrite.stderr.contains("failed"), "\(pubWrite)")
            let pubRead = try await runTool(
                Tools.qemuIO,
                ["-r"] + Self.qemuArguments(daemon, "pub1", certificates: certificates.clientOnlyCA) + ["-c", "read -P 0 0 64k"])
            #expect(pubRead.status == 0 && !pubRead.stdout.contains("failed"), "\(pubRead)")
        }
    }

    @Test("pre-shared keys: nbdinfo and qemu-io get in with a psktool key, an unknown user or a plaintext client does not; access rules see the PSK username")
    func preSharedKeys() async throws {
        let scratch = try ScratchDirectory("tls-psk")
        defer { scratch.remove() }
        // psktool's format; qemu's tls-creds-psk reads keys.psk from its dir.
        let made = try await runTool(
            "/bin/sh",
            [
                "-c",
                "cd \"$1\" && mkdir alice stranger && echo \"alice:$(openssl rand -hex 32)\" > alice/keys.psk && "
                    + "echo \"carol:$(openssl rand -hex 32)\" > carol.psk && cat alice/keys.psk carol.psk > server.psk && "
                    + "echo \"alice:$(openssl rand -hex 32)\" > stranger/keys.psk",
                "sh", scratch.path,
            ])
        try #require(made.status == 0, "\(made)")
        let config = scratch.file("cairn.yaml")
        try """
            tls: {psk_file: \(scratch.file("server.psk"))}
            access:
              - {exports: ["shared"]}
              - {exports: ["alices"], clients: ["alice"]}
            """.write(toFile: config, atomically: true, encoding: .utf8)
        try await withDaemon(extraArguments: ["--config", config]) { daemon in
            try await daemon.createVolume("shared", "4M")
            try await daemon.createVolume("alices", "4M")
            func uri(_ user: String, _ export: String, _ keys: String) -> String {
                "nbds://\(user)@127.0.0.1:\(daemon.nbdPort)/\(export)?tls-psk-file=\(keys)"
            }
            let alice = try await runTool(Tools.nbdinfo, [uri("alice", "alices", scratch.file("alice/keys.psk"))])
            #expect(alice.status == 0 && alice.stdout.contains("with TLS") && alice.stdout.contains("4194304"), "\(alice)")
            let io = try await runTool(
                Tools.qemuIO,
                [
                    "--object", "tls-creds-psk,id=tls0,dir=\(scratch.file("alice")),endpoint=client,username=alice",
                    "--image-opts", "driver=nbd,host=127.0.0.1,port=\(daemon.nbdPort),export=alices,tls-creds=tls0",
                    "-c", "write -P 0x61 0 64k", "-c", "read -P 0x61 0 64k",
                ])
            #expect(io.status == 0 && !io.stdout.contains("failed") && !io.stderr.contains("failed"), "\(io)")
            // carol's key is good, but the rule for "alices" names alice only: carol sees "shared" alone.
            let carolList = try await runTool(Tools.nbdinfo, ["--list", uri("carol", "", scratch.file("carol.psk"))])
            #expect(
                carolList.status == 0 && carolList.stdout.contains("shared") && !carolList.stdout.contains("alices"),
                "\(carolList)")
            let carolOpen = try await runTool(Tools.nbdinfo, [uri("carol", "alices", scratch.file("carol.psk"))])
            #expect(carolOpen.status != 0, "\(carolOpen)")
            // A wrong key for a known name, and plaintext, are refused.
            let stranger = try await runTool(Tools.nbdinfo, [uri("alice", "shared", scratch.file("stranger/keys.psk"))])
            #expect(stranger.status != 0, "\(stranger)")
            let plain = try await runTool(Tools.nbdinfo, [daemon.uri("shared")])
            #expect(plain.status != 0, "\(plain)")
        }
        let both = try await runTool(
            TestDaemon.binary,
            [
                "serve", "--tls-psk-file", scratch.file("server.psk"), "--tls-cert", scratch.file("server.psk"),
                "--tls-key", scratch.file("server.psk"), "--check-config",
            ])
        #expect(both.status == 64 && both.stderr.contains("not both"), "\(both)")
        try "alice:abcd\n".write(toFile: scratch.file("short.psk"), atomically: true, encoding: .utf8)
        let directory = TestDaemon.makeDataDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let short = try await runTool(
            TestDaemon.binary,
            ["serve", "--data-dir", directory, "--nbd-port", "0", "--tls-psk-file", scratch.file("short.psk")],
            timeout: 60)
        #expect(short.status != 0 && short.stderr.contains("at least 16 bytes"), "\(short)")
    }

    @Test("Cairn's own NBD client speaks TLS: copy-and-write and cow-map over nbds:// with certificates and with a PSK")
    func ownClientOverTLS() async throws {
        let scratch = try ScratchDirectory("tls-own")
        defer { scratch.remove() }
        let certificates = try await Certificates(in: scratch)
        try await withDaemon(extraArguments: [
            "--tls", "required", "--tls-cert", certificates.serverCert, "--tls-key", certificates.serverKey,
        ]) { daemon in
            try await daemon.createVolume("v", "8M")
            let secure = Self.tlsURI(daemon, "v", certificates: certificates.clientOnlyCA)
            let copied = try await daemon.cli([
                "copy-and-write", secure, "--chunk-size", "64K", "--source", "0", "--target", "1M", "--offset", "4K", "--pattern", "0x5e",
                "--length", "4K",
            ])
            #expect(copied.status == 0, "\(copied)")
            let map = try await daemon.cli(["cow-map", secure, "--json"])
            #expect(map.status == 0, "\(map)")
            let check = try await runTool(
                Tools.qemuIO,
                Self.qemuArguments(daemon, "v", certificates: certificates.clientOnlyCA) + [
                    "-r", "-c", "read -P 0x5e 1052672 4k",
                ])
            #expect(check.status == 0 && !check.stdout.contains("failed"), "\(check)")
            // Plaintext against a TLS-only server, and a CA that did not sign the server: refused.
            let plain = try await daemon.cli(["cow-map", daemon.uri("v")])
            #expect(plain.status != 0 && plain.stderr.contains("TLS"), "\(plain)")
            try FileManager.default.createDirectory(atPath: scratch.file("other"), withIntermediateDirectories: true)
            let other = try await runTool(
                "/bin/sh",
                ["-c", "cd \"$1\" && openssl req -x509 -newkey rsa:2048 -nodes -keyout k.pem -out ca-cert.pem -days 1 -subj /CN=other 2>/dev/null", "sh", scratch.file("other")])
            try #require(other.status == 0, "\(other)")
            let untrusted = try await daemon.cli(["cow-map", Self.tlsURI(daemon, "v", certificates: scratch.file("other"))])
            #expect(untrusted.status != 0, "\(untrusted)")
        }
        try "alice:\(String(repeating: "ab", count: 32))\n".write(
            toFile: scratch.file("keys.psk"), atomically: true, encoding: .utf8)
        try await withDaemon(extraArguments: ["--tls-psk-file", scratch.file("keys.psk")]) { daemon in
            try await daemon.createVolume("p", "4M")
            let uri = "nbds://alice@127.0.0.1:\(daemon.nbdPort)/p?tls-psk-file=\(scratch.file("keys.psk"))"
            let map = try await daemon.cli(["cow-map", uri])
            #expect(map.status == 0, "\(map)")
            let stranger = try await daemon.cli(["cow-map", uri.replacingOccurrences(of: "alice@", with: "bob@")])
            #expect(stranger.status != 0, "\(stranger)")
        }
    }
}
