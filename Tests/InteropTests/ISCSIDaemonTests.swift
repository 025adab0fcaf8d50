import CairnAPI
import CairnTestSupport
import Foundation
import InteropSupport
import Testing

/// libiscsi's tools and qemu's iSCSI driver against a real `cairn serve`: discovery, INQUIRY and READ
/// CAPACITY, data written over iSCSI read back over NBD (one engine, one write path), discards as holes,
/// read-only snapshot targets, garbage on the socket, and acknowledged writes surviving kill -9.
@Suite("iSCSI against cairn serve")
struct ISCSIDaemonTests {
    @Test("iscsi-ls discovers every volume and snapshot; iscsi-inq and iscsi-readcapacity16 describe a LUN")
    func discoveryAndDescription() async throws {
        try await withDaemon { daemon in
            try await daemon.createVolume("alpha", "64M")
            try await daemon.createVolume("beta", "16M")
            try await daemon.cliOK(["snapshot", "create", "alpha@monday"])
            let list = try await runTool(ISCSITools.ls, ["-s", "iscsi://127.0.0.1:\(try daemon.iscsiPort())"])
            #expect(list.status == 0, "\(list)")
            for target in ["alpha", "beta", "alpha:monday"] {
                #expect(list.stdout.contains("Target:\(ISCSITools.prefix)\(target) "), "\(list.stdout)")
            }
            #expect(list.stdout.contains("Lun:0"), "\(list.stdout)")

            let inquiry = try await runTool(ISCSITools.inq, [try daemon.iscsiURL("alpha")])
            #expect(inquiry.status == 0 && inquiry.stdout.contains("CAIRN"), "\(inquiry)")
            let pages = try await runTool(ISCSITools.inq, ["-e", "1", try daemon.iscsiURL("alpha")])
            for page in ["DEVICE_IDENTIFICATION", "BLOCK_LIMITS", "LOGICAL_BLOCK_PROVISIONING"] {
                #expect(pages.status == 0 && pages.stdout.contains(page), "\(pages)")
            }

            let capacity = try await runTool(ISCSITools.readCapacity16, [try daemon.iscsiURL("alpha")])
            #expect(capacity.status == 0, "\(capacity)")
            #expect(capacity.stdout.contains("Total size:\(64 * MiB)"), "\(capacity.stdout)")
            #expect(capacity.stdout.contains("LBPME:1"), "\(capacity.stdout)")

            let unknown = try await runTool(ISCSITools.inq, ["iscsi://127.0.0.1:\(try daemon.iscsiPort())/\(ISCSITools.prefix)nope/0"])
            #expect(unknown.status != 0, "a login to a target that does not exist succeeded: \(unknown)")
        }
    }

    @Test("qemu-io writes over iSCSI and reads the same bytes over NBD and iSCSI")
    func patternsCrossProtocols() async throws {
        try await withDaemon { daemon in
            try await daemon.createVolume("vol", "64M")
            try await daemon.qemuIOOverISCSI(
                "vol", ["write -P 0xa5 0 1m", "write -P 0x5a \(5 * MiB + 4096) 300k", "write -P 0x3c \(63 * MiB) 1m"])
            try await daemon.qemuIOOverISCSI(
                "vol", ["read -P 0xa5 0 1m", "read -P 0x5a \(5 * MiB + 4096) 300k", "read -P 0 \(2 * MiB) 1m"])
            try await daemon.qemuIOOK(
                "vol", ["read -P 0xa5 0 1m", "read -P 0x5a \(5 * MiB + 4096) 300k", "read -P 0x3c \(63 * MiB) 1m"])
            // NBD writes are seen by iSCSI readers: the same volume, not a copy.
            try await daemon.qemuIOOK("vol", ["write -P 0x77 \(10 * MiB) 64k"])
            try await daemon.qemuIOOverISCSI("vol", ["read -P 0x77 \(10 * MiB) 64k"])
            // A large write takes several R2Ts (the 1 MiB MaxBurstLength).
            try await daemon.qemuIOOverISCSI("vol", ["write -P 0x99 \(20 * MiB) 8m", "read -P 0x99 \(20 * MiB) 8m"])
            try await daemon.expectHealthy()
        }
    }

    @Test("a discard over iSCSI leaves a hole qemu-img map shows, through GET LBA STATUS and over NBD")
    func discardMakesHoles() async throws {
        try await withDaemon { daemon in
            try await daemon.createVolume("thin", "32M")
            try await daemon.qemuIOOverISCSI("thin", ["write -P 0x42 0 8m", "discard \(2 * MiB) 4m"])
            try await daemon.qemuIOOverISCSI("thin", ["read -P 0x42 0 2m", "read -P 0 \(2 * MiB) 4m", "read -P 0x42 \(6 * MiB) 2m"])
            for uri in [try daemon.iscsiURL("thin"), daemon.uri("thin")] {
                let map = try await runTool(Tools.qemuImg, ["map", "-f", "raw", "--output=json", uri])
                #expect(map.status == 0, "\(map)")
                let extents = try JSONDecoder().decode([MapExtent].self, from: Data(map.stdout.utf8))
                let data = extents.filter(\.data).map { $0.start..<($0.start + $0.length) }
                #expect(data == [0..<(2 * MiB), (6 * MiB)..<(8 * MiB)], "\(uri): \(extents)")
            }
        }
    }

    @Test("a snapshot's target is read-only and keeps the data of its time")
    func snapshotTargetIsReadOnly() async throws {
        try await withDaemon { daemon in
            try await daemon.createVolume("vol", "16M")
            try await daemon.qemuIOOverISCSI("vol", ["write -P 0x11 0 1m"])
            try await daemon.cliOK(["snapshot", "create", "vol@before"])
            try await daemon.qemuIOOverISCSI("vol", ["write -P 0x22 0 1m"])
            try await daemon.qemuIOOverISCSI("vol:before", ["read -P 0x11 0 1m"], readOnly: true)
            // Opened read-write, qemu refuses the LUN itself: MODE SENSE says it is write protected.
            let write = try await runTool(Tools.qemuIO, ["-f", "raw", try daemon.iscsiURL("vol:before"), "-c", "write -P 0x33 0 4k"])
            #expect(write.status != 0 || write.stdout.contains("failed") || write.stderr.contains("failed") || write.stderr.contains("read-only"),
                "a write to a snapshot target succeeded: \(write)")
            try await daemon.qemuIOOverISCSI("vol:before", ["read -P 0x11 0 1m"], readOnly: true)
        }
    }

    @Test("garbage and a half-finished login on the iSCSI port do not disturb the daemon or other sessions")
    func garbageOnTheSocket() async throws {
        try await withDaemon { daemon in
            try await daemon.createVolume("vol", "16M")
            let port = try daemon.iscsiPort()
            // Noise, a header announcing a huge data segment, and a login request cut short.
            let script = """
                import socket, sys, random
                port = int(sys.argv[1]); rng = random.Random(int(sys.argv[2]))
                for payload in [bytes(rng.randrange(256) for _ in range(4096)),
                                bytes([0x43, 0x87, 0, 0, 0, 0xff, 0xff, 0xff]) + bytes(40),
                                bytes([0x43, 0x87]) + bytes(20)]:
                    s = socket.create_connection(("127.0.0.1", port), timeout=10)
                    try:
                        s.sendall(payload)
                        s.shutdown(socket.SHUT_WR)
                        s.recv(65536)
                    except OSError:
                        pass
                    s.close()
                print("sent")
                """
            let seed = TestSeed.make()
            print("garbageOnTheSocket seed: \(seed)")
            let sent = try await runPython(script, [String(port), String(seed)])
            #expect(sent.status == 0 && sent.stdout.contains("sent"), "\(sent)")
            try await daemon.qemuIOOverISCSI("vol", ["write -P 0x61 0 64k", "read -P 0x61 0 64k"])
            #expect(daemon.process.isRunning)
        }
    }

    @Test("writes acknowledged with FUA or followed by SYNCHRONIZE CACHE survive kill -9")
    func acknowledgedWritesSurviveKill() async throws {
        let daemon = try await TestDaemon()
        defer { Task { await daemon.destroy() } }
        try await daemon.createVolume("durable", "32M")
        // qemu-io's default cache mode is writethrough: every write is FUA or followed by a flush.
        try await daemon.qemuIOOverISCSI("durable", ["write -P 0x1f 0 4m", "write -P 0x2e \(8 * MiB) 1m", "flush"])
        try await daemon.kill9()
        try await daemon.restart()
        try await daemon.qemuIOOverISCSI("durable", ["read -P 0x1f 0 4m", "read -P 0x2e \(8 * MiB) 1m"])
        try await daemon.qemuIOOK("durable", ["read -P 0x1f 0 4m"])
        try await daemon.expectHealthy()
    }

    @Test("--no-iscsi leaves the listener off")
    func listenerCanBeTurnedOff() async throws {
        try await withDaemon(extraArguments: ["--no-iscsi"]) { daemon in
            #expect(throws: (any Error).self) { try daemon.iscsiPort() }
        }
    }
}
