import Foundation
import InteropSupport
import Testing

/// A live volume offers `x-cairn:copy-on-write` (docs/NBD-EXTENSIONS.md). Clients that do not ask for it
/// must see a standard NBD server: qemu-io and qemu-img select only what they know, nbdinfo and nbdcopy
/// work as before, and listing every context (an empty LIST_META_CONTEXT) shows the extension like any
/// other context.
@Suite("standard clients and the copy-on-write extension")
struct StandardClientsTests {
    @Test("qemu-io, qemu-img map, nbdinfo --map/--json/--list and nbdcopy against a volume with a snapshot")
    func standardClients() async throws {
        try await withDaemon { daemon in
            try await daemon.cliOK(["volume", "create", "disk", "8M"])
            let uri = daemon.uri("disk")
            let write = try await runProcess(Tools.qemuIO, ["-f", "raw", uri, "-c", "write -P 0x61 1M 1M"])
            #expect(write.status == 0, "\(write)")
            try await daemon.cliOK(["snapshot", "create", "disk@s"])
            let cow = try await runProcess(
                Tools.qemuIO,
                [
                    "-f", "raw", uri, "-c", "write -P 0x62 1M 4k", "-c", "read -P 0x62 1M 4k", "-c",
                    "read -P 0x61 1028k 4k",
                ])
            #expect(cow.status == 0 && !cow.stdout.contains("verification failed"), "\(cow)")

            let map = try await runProcess(Tools.qemuImg, ["map", "--output=json", "-f", "raw", uri])
            #expect(map.status == 0 && map.stdout.contains("\"data\": true"), "\(map)")

            let nbdinfoMap = try await runProcess(Tools.nbdinfo, ["--map", uri])
            let rows = nbdinfoMap.stdout.split(separator: "\n").map {
                $0.split(separator: " ", omittingEmptySubsequences: true)
            }
            #expect(
                nbdinfoMap.status == 0
                    && rows.map { "\($0[0]) \($0[1]) \($0[2])" } == [
                        "0 1048576 3", "1048576 1048576 0", "2097152 6291456 3",
                    ], "\(nbdinfoMap)")

            // Asked for by name, nbdinfo prints the extension's map like any other context's.
            let cowMap = try await runProcess(Tools.nbdinfo, ["--map=x-cairn:copy-on-write", uri])
            let cowRows = cowMap.stdout.split(separator: "\n").map {
                $0.split(separator: " ", omittingEmptySubsequences: true)
            }
            #expect(
                cowMap.status == 0
                    && cowRows.map { "\($0[0]) \($0[1]) \($0[2])" } == [
                        "0 1114112 0", "1114112 983040 1", "2097152 6291456 0",
                    ], "the written chunk is unshared: \(cowMap)")

            let info = try await runProcess(Tools.nbdinfo, ["--json", uri])
            let json = try JSONSerialization.jsonObject(with: Data(info.stdout.utf8)) as? [String: Any]
            let export = (json?["exports"] as? [[String: Any]])?.first
            #expect((export?["contexts"] as? [String])?.contains("x-cairn:copy-on-write") == true, "\(info)")
            #expect((export?["contexts"] as? [String])?.first == "base:allocation", "\(info)")

            let snapshotInfo = try await runProcess(Tools.nbdinfo, ["--json", daemon.uri("disk@s")])
            #expect(!snapshotInfo.stdout.contains("x-cairn"), "read-only snapshots do not offer it: \(snapshotInfo)")

            let list = try await runProcess(Tools.nbdinfo, ["--list", "--json", "nbd://127.0.0.1:\(daemon.nbdPort)"])
            #expect(list.status == 0 && list.stdout.contains("\"disk@s\""), "\(list)")

            let directory = FileManager.default.temporaryDirectory.appendingPathComponent("cow-\(UUID())")
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(at: directory) }
            let copy = directory.appendingPathComponent("out.raw").path
            let out = try await runProcess(Tools.nbdcopy, [uri, copy])
            let bytes = FileManager.default.contents(atPath: copy) ?? Data()
            #expect(out.status == 0 && bytes.count == 8 << 20, "\(out)")
            #expect(bytes[(1 << 20)..<((1 << 20) + 4096)].allSatisfy { $0 == 0x62 })
            #expect(bytes[((1 << 20) + 4096)..<(2 << 20)].allSatisfy { $0 == 0x61 })
        }
    }
}
