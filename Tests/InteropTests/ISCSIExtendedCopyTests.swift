import CairnAPI
import CairnTestSupport
import Foundation
import InteropSupport
import Testing

/// EXTENDED COPY between two Cairn LUNs, driven by qemu's copy offload (`qemu-img convert -C`): the copy
/// is done inside the pool (aligned chunks shared, pool status shows them), the destination target's
/// data-out counter shows the data never crossed the wire, and qemu's own compare finds both equal.
@Suite("iSCSI EXTENDED COPY against cairn serve")
struct ISCSIExtendedCopyTests {
    static func series(_ name: String, _ labels: [String: String]) -> String {
        name + "{" + labels.sorted { $0.key < $1.key }.map { "\($0.key)=\"\($0.value)\"" }.joined(separator: ",") + "}"
    }

    @Test("qemu-img convert -C between two LUNs shares chunks and sends no data; qemu-img compare agrees")
    func convertWithCopyOffload() async throws {
        try await withDaemon { daemon in
            try await daemon.createVolume("src", "64M")
            try await daemon.createVolume("dst", "64M")
            try await daemon.qemuIOOverISCSI(
                "src", ["write -P 0xa5 0 8m", "write -P 0x5a \(16 * MiB) 4m", "write -P 0x3c \(40 * MiB + 512) 3k"])
            // Old data in the destination must be replaced, holes included.
            try await daemon.qemuIOOverISCSI("dst", ["write -P 0x11 \(20 * MiB) 1m"])
            let sharedBefore = try await daemon.poolStatus().sharedBytes
            let before = try await MetricsDaemonTests.scrape(daemon)

            let convert = try await runTool(
                Tools.qemuImg,
                ["convert", "-C", "-n", "-f", "raw", "-O", "raw", try daemon.iscsiURL("src"), try daemon.iscsiURL("dst")],
                timeout: 300)
            #expect(convert.status == 0, "\(convert)")
            let compare = try await runTool(
                Tools.qemuImg,
                ["compare", "-f", "raw", "-F", "raw", try daemon.iscsiURL("src"), try daemon.iscsiURL("dst")])
            #expect(compare.status == 0, "\(compare)")
            // The same bytes over NBD: one engine.
            try await daemon.qemuIOOK(
                "dst",
                [
                    "read -P 0xa5 0 8m", "read -P 0x5a \(16 * MiB) 4m", "read -P 0 \(20 * MiB) 1m",
                    "read -P 0x3c \(40 * MiB + 512) 3k",
                ])

            let status = try await daemon.poolStatus()
            #expect(status.sharedBytes >= sharedBefore + 12 * UInt64(MiB), "pool status: \(status)")
            let after = try await MetricsDaemonTests.scrape(daemon)
            func delta(_ series: String) -> Double { (after[series] ?? 0) - (before[series] ?? 0) }
            let target = ISCSITools.prefix + "dst"
            let sent = delta(Self.series("cairn_iscsi_data_bytes_total", ["target": target, "direction": "data_out"]))
            let copied = delta(Self.series("cairn_iscsi_copy_bytes_total", ["target": target]))
            let copies = delta(
                Self.series(
                    "cairn_iscsi_commands_total",
                    ["target": target, "operation": "extended_copy", "result": "good"]))
            #expect(copies >= 1, "no EXTENDED COPY reached the destination: \(after.filter { $0.key.contains("iscsi") })")
            #expect(copied >= Double(12 * MiB), "\(after.filter { $0.key.contains("iscsi") })")
            // Only parameter lists (a few dozen bytes per command) crossed the wire, not the 12 MiB.
            #expect(sent < Double(MiB), "data-out to the destination: \(sent) bytes")
            try await daemon.expectHealthy()
        }
    }

    @Test("a copy from a read-only snapshot LUN into a volume; a snapshot LUN is never a destination")
    func snapshotSourceAndReadOnlyDestination() async throws {
        try await withDaemon { daemon in
            try await daemon.createVolume("vol", "32M")
            try await daemon.createVolume("copy", "32M")
            try await daemon.qemuIOOverISCSI("vol", ["write -P 0x42 0 4m"])
            try await daemon.cliOK(["snapshot", "create", "vol@s"])
            try await daemon.qemuIOOverISCSI("vol", ["write -P 0x43 0 4m"])
            let convert = try await runTool(
                Tools.qemuImg,
                ["convert", "-C", "-n", "-f", "raw", "-O", "raw", try daemon.iscsiURL("vol:s"), try daemon.iscsiURL("copy")],
                timeout: 300)
            #expect(convert.status == 0, "\(convert)")
            try await daemon.qemuIOOK("copy", ["read -P 0x42 0 4m", "read -P 0 \(4 * MiB) 28m"])
            // Into the snapshot: refused (qemu cannot even open it for writing), and the snapshot is unchanged.
            let refused = try await runTool(
                Tools.qemuImg,
                ["convert", "-C", "-n", "-f", "raw", "-O", "raw", try daemon.iscsiURL("copy"), try daemon.iscsiURL("vol:s")],
                timeout: 300)
            #expect(refused.status != 0, "a copy into a read-only snapshot LUN succeeded: \(refused)")
            try await daemon.qemuIOOverISCSI("vol:s", ["read -P 0x42 0 4m"], readOnly: true)
            try await daemon.expectHealthy()
        }
    }
}
