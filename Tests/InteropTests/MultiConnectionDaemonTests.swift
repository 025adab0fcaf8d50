import CairnAPI
import Foundation
import InteropSupport
import Testing

/// Several clients on one volume at once (CAN_MULTI_CONN is advertised): disjoint writes that share
/// chunks and sub-blocks, and a FLUSH on one connection covering writes completed on another.
@Suite("multiple connections against cairn serve")
struct MultiConnectionDaemonTests {
    @Test("two qemu-io and one nbdcopy write interleaved ranges concurrently; everything reads back")
    func concurrentDisjointWriters() async throws {
        let scratch = try ScratchDirectory("multi")
        defer { scratch.remove() }
        let source = scratch.file("source.raw")
        let create = try await runTool(Tools.qemuImg, ["create", "-f", "raw", source, "8M"])
        try #require(create.status == 0, "\(create)")
        let fill = try await runTool(
            Tools.qemuIO, ["-f", "raw", source, "-c", "write -P 0x3c 0 3m", "-c", "write -P 0x3d 5m 1m"])
        try #require(fill.status == 0, "\(fill)")
        try await withDaemon { daemon in
            try await daemon.createVolume("mc", "32M")
            try await daemon.createVolume("side", "8M")
            // Writers A and B alternate every 6 KiB over [0, 12M): they share every 64 KiB chunk and,
            // at 6 KiB strides, many 4 KiB sub-blocks; both pad fresh sub-blocks at the same time.
            let stride = 6 * KiB
            var a: [String] = []
            var b: [String] = []
            for index in 0..<(12 * MiB / stride) {
                let offset = index * stride
                if index % 2 == 0 {
                    a.append("write -P \(0x10 + index % 7) \(offset) \(stride)")
                } else {
                    b.append("write -P \(0x20 + index % 5) \(offset) \(stride)")
                }
            }
            async let runA = daemon.qemuIO("mc", a, timeout: 180)
            async let runB = daemon.qemuIO("mc", b, timeout: 180)
            async let copy = runTool(
                Tools.nbdcopy, ["--connections=2", source, daemon.uri("side")], timeout: 180)
            let (resultA, resultB, resultCopy) = try await (runA, runB, copy)
            #expect(resultA.status == 0 && !resultA.stdout.contains("failed"), "A: \(resultA.stderr)")
            #expect(resultB.status == 0 && !resultB.stdout.contains("failed"), "B: \(resultB.stderr)")
            #expect(resultCopy.status == 0, "nbdcopy: \(resultCopy)")

            var reads: [String] = []
            for index in 0..<(12 * MiB / stride) {
                let pattern = index % 2 == 0 ? 0x10 + index % 7 : 0x20 + index % 5
                reads.append("read -P \(pattern) \(index * stride) \(stride)")
            }
            reads.append("read -P 0 \(12 * MiB) 20m")
            let verify = try await daemon.qemuIO("mc", reads, timeout: 180)
            #expect(verify.status == 0 && !verify.qemuIOPatternFailed, "\(verify.stdout.prefix(2000))")
            let side = try await runTool(Tools.qemuImg, ["compare", "-f", "raw", "-F", "raw", source, daemon.uri("side")])
            #expect(side.status == 0, "\(side)")
            #expect(try await daemon.volume("mc").allocatedBytes == UInt64(12 * MiB))
            try await daemon.expectHealthy()
        }
    }

    /// proto.md: with CAN_MULTI_CONN, a FLUSH on one connection covers writes completed on every
    /// connection. The script kills the daemon itself right after the FLUSH reply, well inside the
    /// one-second commit interval, so only that FLUSH can have made the other connection's writes durable.
    @Test("FLUSH on one connection makes another connection's completed writes durable (kill -9 after)")
    func flushCoversOtherConnections() async throws {
        let script = """
            import json, os, signal, sys, nbd
            uri, pid = sys.argv[1], int(sys.argv[2])
            writer = nbd.NBD()
            writer.connect_uri(uri)
            flusher = nbd.NBD()
            flusher.connect_uri(uri)
            assert writer.can_multi_conn() and flusher.can_multi_conn()
            for i in range(16):
                writer.pwrite(bytes([0x60 + i]) * 65536, i * 131072)
            writer.zero(65536, 4 << 20, flags=nbd.CMD_FLAG_NO_HOLE)
            writer.trim(65536, 5 << 20)
            flusher.flush()
            os.kill(pid, signal.SIGKILL)
            print(json.dumps({"ok": True}))
            """
        try await withDaemon { daemon in
            try await daemon.createVolume("fl", "8M")
            try await daemon.qemuIOOK("fl", ["write -P 0xee 4m 2m"])
            let run = try await runPython(script, [daemon.uri("fl"), "\(daemon.process.processIdentifier)"])
            try #require(run.status == 0, "\(run)")
            _ = try await poll(timeout: 10) { !daemon.process.isRunning }
            try await daemon.restart()
            var reads: [String] = []
            for i in 0..<16 { reads.append("read -P \(0x60 + i) \(i * 131072) 64k") }
            for i in 0..<16 { reads.append("read -P 0 \(i * 131072 + 65536) 64k") }
            reads += ["read -P 0 4m 64k", "read -P 0xee \(4 * MiB + 65536) \(MiB - 65536)",
                      "read -P 0 5m 64k", "read -P 0xee \(5 * MiB + 65536) \(MiB - 65536)"]
            try await daemon.qemuIOOK("fl", reads)
            try await daemon.expectHealthy()
        }
    }
}
