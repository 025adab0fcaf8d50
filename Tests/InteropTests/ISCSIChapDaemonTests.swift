import CairnTestSupport
import Foundation
import InteropSupport
import Testing

/// CHAP against a real `cairn serve --config`: libiscsi's tools and qemu take the CHAP user and secret in
/// the URL (`iscsi://user%secret@host/...`, mutual CHAP with `?target_user=&target_password=`). The CHAP
/// name is the session's identity for the access rules' `clients`, as a certificate subject is for NBD.
@Suite("iSCSI CHAP against cairn serve")
struct ISCSIChapDaemonTests {
    static let config = """
        iscsi:
          chap:
            required: true
            users:
              - {name: host1, secret: host1-secret-0123}
              - {name: host2, secret: host2-secret-4567}
            target: {name: cairn-target, secret: target-secret-89ab}
        access:
          - {exports: ["shared*"]}
          - {exports: ["private*"], clients: ["host1"]}
        """

    /// iscsi://USER%SECRET@127.0.0.1:PORT[/iqn…:EXPORT/0][?QUERY]
    static func url(_ daemon: TestDaemon, user: String?, secret: String?, export: String? = nil, query: String = "")
        throws -> String
    {
        let credentials = user.map { "\($0)%\(secret ?? "")@" } ?? ""
        let path = export.map { "/\(ISCSITools.prefix)\($0)/0" } ?? ""
        return "iscsi://\(credentials)127.0.0.1:\(try daemon.iscsiPort())\(path)\(query)"
    }

    @Test("one-way and mutual CHAP log in; a wrong secret, a wrong target secret or no CHAP is refused")
    func chapLogins() async throws {
        let scratch = try ScratchDirectory("iscsi-chap")
        defer { scratch.remove() }
        let file = scratch.file("cairn.yaml")
        try Self.config.write(toFile: file, atomically: true, encoding: .utf8)
        try await withDaemon(extraArguments: ["--config", file]) { daemon in
            try await daemon.createVolume("shared", "16M")
            try await daemon.createVolume("private", "16M")

            // Discovery lists what each identity may open.
            let host1 = try await runTool(ISCSITools.ls, ["-s", try Self.url(daemon, user: "host1", secret: "host1-secret-0123")])
            #expect(host1.status == 0, "\(host1)")
            #expect(host1.stdout.contains(ISCSITools.prefix + "private") && host1.stdout.contains(ISCSITools.prefix + "shared"))
            let host2 = try await runTool(ISCSITools.ls, ["-s", try Self.url(daemon, user: "host2", secret: "host2-secret-4567")])
            #expect(host2.status == 0, "\(host2)")
            #expect(host2.stdout.contains(ISCSITools.prefix + "shared") && !host2.stdout.contains(ISCSITools.prefix + "private"))

            // Wrong secret, unknown user, no CHAP at all (required): refused at login.
            for (user, secret) in [("host1", "host2-secret-4567"), ("nobody", "nobody-secret-00"), (nil, nil)] as [(String?, String?)] {
                let refused = try await runTool(ISCSITools.ls, ["-s", try Self.url(daemon, user: user, secret: secret)])
                #expect(refused.status != 0, "\(user ?? "no CHAP") logged in: \(refused)")
            }
            #expect(daemon.log.contains("authenticationFailure"), "\(daemon.log.suffix(3000))")

            // Data over a CHAP session; host2 may not open the private target.
            try await daemon.qemuIOOverISCSIURL(
                try Self.url(daemon, user: "host1", secret: "host1-secret-0123", export: "private"),
                ["write -P 0x61 0 1m", "read -P 0x61 0 1m"])
            let denied = try await runTool(
                Tools.qemuIO,
                ["-f", "raw", try Self.url(daemon, user: "host2", secret: "host2-secret-4567", export: "private"), "-c", "read 0 4k"])
            #expect(denied.status != 0 || denied.stderr.contains("Failed"), "host2 opened the private target: \(denied)")

            // Mutual CHAP: the initiator checks the target's answer too.
            let mutual = try await runTool(
                ISCSITools.inq,
                [
                    try Self.url(
                        daemon, user: "host1", secret: "host1-secret-0123", export: "private",
                        query: "?target_user=cairn-target&target_password=target-secret-89ab")
                ])
            #expect(mutual.status == 0 && mutual.stdout.contains("CAIRN"), "\(mutual)")
            let impostor = try await runTool(
                ISCSITools.inq,
                [
                    try Self.url(
                        daemon, user: "host1", secret: "host1-secret-0123", export: "private",
                        query: "?target_user=cairn-target&target_password=some-other-secret")
                ])
            #expect(impostor.status != 0, "libiscsi accepted a target that does not know the target secret: \(impostor)")
            #expect(daemon.process.isRunning)
        }
    }
}

extension ISCSIChapDaemonTests {
    @Test("--check-config refuses short secrets, duplicate users, a reused target secret and required without users")
    func chapConfigurationMistakes() async throws {
        let scratch = try ScratchDirectory("iscsi-chap-config")
        defer { scratch.remove() }
        let cases: [(String, String)] = [
            ("users: [{name: a, secret: short}]", "must be 12 to 255 bytes"),
            ("users: [{name: a, secret: a-long-secret-1}, {name: a, secret: a-long-secret-2}]", "listed twice"),
            ("users: [{name: a, secret: a-long-secret-1}]\n    target: {name: t, secret: a-long-secret-1}", "must differ"),
            ("required: true", "needs at least one CHAP user"),
            ("users: [{name: a}]", "exactly one of secret or secret_file"),
            ("users: [{name: a, secret_file: \(scratch.path)/missing}]", "cannot read the CHAP secret file"),
        ]
        for (chap, message) in cases {
            let file = scratch.file("chap.yaml")
            try "data_dir: \(scratch.path)/pool\niscsi:\n  chap:\n    \(chap)\n".write(
                toFile: file, atomically: true, encoding: .utf8)
            let result = try await runTool(TestDaemon.binary, ["serve", "--config", file, "--check-config"])
            #expect(result.status != 0 && result.stderr.contains(message), "\(chap): \(result)")
        }
        let good = scratch.file("good.yaml")
        try "data_dir: \(scratch.path)/pool\niscsi:\n  chap:\n    users: [{name: a, secret: a-long-secret-1}]\n".write(
            toFile: good, atomically: true, encoding: .utf8)
        let accepted = try await runTool(TestDaemon.binary, ["serve", "--config", good, "--check-config"])
        #expect(accepted.status == 0, "\(accepted)")
    }
}

extension TestDaemon {
    /// qemu-io on an iSCSI URL, each command a `-c`; must succeed with every pattern check passing.
    func qemuIOOverISCSIURL(_ url: String, _ commands: [String], sourceLocation: SourceLocation = #_sourceLocation)
        async throws
    {
        let result = try await runTool(Tools.qemuIO, ["-f", "raw", url] + commands.flatMap { ["-c", $0] })
        let failed = result.stdout.contains("failed") || result.stderr.contains("failed")
        #expect(result.status == 0 && !result.qemuIOPatternFailed && !failed, "qemu-io \(commands): \(result)",
            sourceLocation: sourceLocation)
    }
}
