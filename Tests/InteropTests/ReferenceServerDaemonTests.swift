import CairnAPI
import Foundation
import InteropSupport
import Testing

/// Side by side with a reference server (nbdkit's file plugin on a sparse file with the same contents):
/// the same client must see the same map and the same bytes, in comparable time.
@Suite("cairn serve side by side with nbdkit")
struct ReferenceServerDaemonTests {
    /// Writes the same layout to a Cairn volume (over NBD) and to a sparse file: 4 KiB of data every
    /// 8 KiB over the first 24 MiB of 32 MiB, each sub-block with its own byte.
    static let fill = """
        import os, sys, nbd
        h = nbd.NBD()
        h.connect_uri(sys.argv[1])
        f = os.open(sys.argv[2], os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        os.ftruncate(f, 32 << 20)
        for i in range(0, 24 << 20, 8192):
            block = bytes([1 + (i >> 13) % 250]) * 4096
            os.pwrite(f, block, i)
            while h.aio_in_flight() >= 32:
                h.poll(-1)
            h.aio_pwrite(nbd.Buffer.from_bytearray(bytearray(block)), i)
        while h.aio_in_flight() > 0:
            h.poll(-1)
        h.flush()
        h.shutdown()
        os.fsync(f)
        os.close(f)
        """

    @Test("qemu-img map of a fragmented volume: same extents as nbdkit, and not an order of magnitude slower")
    func fragmentedMap() async throws {
        let scratch = try ScratchDirectory("reference")
        defer { scratch.remove() }
        let file = scratch.file("same.raw")
        try await withDaemon { daemon in
            try await daemon.createVolume("frag", "32M")
            let fill = try await runPython(Self.fill, [daemon.uri("frag"), file], timeout: 120)
            try #require(fill.status == 0, "\(fill)")

            let referenceStart = Date()
            let reference = try await runTool(
                "/usr/bin/nbdkit",
                ["-U", "-", "file", file, "--run", "\(Tools.qemuImg) map -f raw --output=json \"$uri\""], timeout: 120)
            let referenceTime = Date().timeIntervalSince(referenceStart)
            try #require(reference.status == 0, "\(reference)")

            let cairnStart = Date()
            let cairn = try await runTool(Tools.qemuImg, ["map", "-f", "raw", "--output=json", daemon.uri("frag")], timeout: 120)
            let cairnTime = Date().timeIntervalSince(cairnStart)
            try #require(cairn.status == 0, "\(cairn)")

            let referenceMap = try JSONDecoder().decode([MapExtent].self, from: Data(reference.stdout.utf8))
            let cairnMap = try JSONDecoder().decode([MapExtent].self, from: Data(cairn.stdout.utf8))
            #expect(dataRanges(cairnMap) == dataRanges(referenceMap), "Cairn and nbdkit disagree on the data ranges")
            #expect(dataRanges(cairnMap).count == 3072)

            let compare = try await runTool(Tools.qemuImg, ["compare", "-f", "raw", "-F", "raw", file, daemon.uri("frag")], timeout: 120)
            #expect(compare.status == 0, "\(compare)")

            // qemu-img map sends one BLOCK_STATUS with REQ_ONE per extent, each asking for the rest of the
            // disk. A server that answers in time proportional to one extent does this in well under a
            // second here (nbdkit, qemu-nbd); one that builds a long extent list per request and throws
            // all but the first away is quadratic. Generous bound: ten times the reference, at least 3 s.
            let bound = max(3, 10 * referenceTime)
            #expect(
                cairnTime < bound,
                "qemu-img map took \(cairnTime) s against Cairn, \(referenceTime) s against nbdkit (bound \(bound) s)")
        }
    }
}
