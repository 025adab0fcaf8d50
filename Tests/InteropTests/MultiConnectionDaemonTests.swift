import CairnAPI
import CairnTestSupport
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
            let side = try await runTool(
                Tools.qemuImg, ["compare", "-f", "raw", "-F", "raw", source, daemon.uri("side")])
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
            reads += [
                "read -P 0 4m 64k", "read -P 0xee \(4 * MiB + 65536) \(MiB - 65536)",
                "read -P 0 5m 64k", "read -P 0xee \(5 * MiB + 65536) \(MiB - 65536)",
            ]
            try await daemon.qemuIOOK("fl", reads)
            try await daemon.expectHealthy()
        }
    }

    /// One connection's share of the random test: it owns every `n`-th 16 KiB stripe (so the four
    /// connections share every 64 KiB chunk), pipelines up to 8 requests on stripes not in flight, keeps
    /// a byte model of its stripes and writes it to a file at the end.
    static let stripeWorker = """
        import random, sys, nbd
        uri, seed, k, n, out, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], int(sys.argv[6])
        rng = random.Random(seed * 1000 + k)
        h = nbd.NBD()
        h.connect_uri(uri)
        size = h.get_size()
        STRIPE = 16384
        model = bytearray(size)
        mine = [s for s in range(size // STRIPE) if s % n == k]
        busy = set()
        failures = []
        def completion(stripe, what):
            def cb(err):
                busy.discard(stripe)
                if err.value != 0:
                    failures.append("%s: errno %d" % (what, err.value))
                return 1
            return cb
        for step in range(steps):
            while len(busy) >= 8:
                h.poll(-1)
            stripe = rng.choice([s for s in mine if s not in busy])
            base = stripe * STRIPE
            kind = rng.random()
            fua = nbd.CMD_FLAG_FUA if rng.random() < 0.15 else 0
            if kind < 0.85 and kind >= 0.7:
                # TRIM only whole 4 KiB sub-blocks: then it must read back as zeros.
                offset = rng.randrange(0, STRIPE, 4096)
                length = rng.randrange(4096, STRIPE - offset + 1, 4096)
            else:
                offset = rng.randrange(0, STRIPE, 512)
                length = rng.randrange(512, STRIPE - offset + 1, 512)
            what = "%d@%d+%d" % (step, base + offset, length)
            busy.add(stripe)
            if kind < 0.5:
                pattern = rng.randrange(1, 256)
                model[base + offset:base + offset + length] = bytes([pattern]) * length
                buf = nbd.Buffer.from_bytearray(bytearray([pattern]) * length)
                h.aio_pwrite(buf, base + offset, completion=completion(stripe, "write " + what), flags=fua)
            elif kind < 0.85:
                model[base + offset:base + offset + length] = bytes(length)
                if kind < 0.6:
                    h.aio_zero(length, base + offset, completion=completion(stripe, "zero " + what),
                               flags=fua | nbd.CMD_FLAG_NO_HOLE)
                elif kind < 0.7:
                    h.aio_zero(length, base + offset, completion=completion(stripe, "punch " + what), flags=fua)
                else:
                    h.aio_trim(length, base + offset, completion=completion(stripe, "trim " + what), flags=fua)
            else:
                # Read back part of a stripe with nothing in flight on it: it must match the model now.
                busy.discard(stripe)
                data = h.pread(length, base + offset)
                if data != bytes(model[base + offset:base + offset + length]):
                    failures.append("read %s differs from the model" % what)
            if rng.random() < 0.03:
                h.flush()
        while h.aio_in_flight() > 0:
            h.poll(-1)
        h.flush()
        with open(out, "wb") as f:
            f.write(model)
        h.shutdown()
        if failures:
            print("\\n".join(failures[:20]))
            sys.exit(1)
        """

    @Test("four pipelined connections: random writes, zeroes, punches and trims on stripes sharing chunks (seeded)")
    func randomStripesAcrossConnections() async throws {
        let seed = TestSeed.make()
        let connections = 4
        let size = 8 * MiB
        let stripe = 16 * KiB
        let scratch = try ScratchDirectory("stripes")
        defer { scratch.remove() }
        try await withDaemon { daemon in
            try await daemon.createVolume("st", "8M")
            let results = try await withThrowingTaskGroup(of: (Int, ProcessResult).self) { group in
                for k in 0..<connections {
                    group.addTask {
                        let result = try await runPython(
                            Self.stripeWorker,
                            [daemon.uri("st"), "\(seed)", "\(k)", "\(connections)", scratch.file("model\(k)"), "1500"],
                            timeout: 240)
                        return (k, result)
                    }
                }
                var all: [(Int, ProcessResult)] = []
                for try await item in group { all.append(item) }
                return all.sorted { $0.0 < $1.0 }
            }
            for (k, result) in results {
                #expect(result.status == 0, "seed \(seed), connection \(k): \(result)")
            }
            try #require(results.allSatisfy { $0.1.status == 0 }, "seed \(seed)")
            var expected = [UInt8](repeating: 0, count: size)
            for k in 0..<connections {
                let model = try [UInt8](Data(contentsOf: URL(fileURLWithPath: scratch.file("model\(k)"))))
                try #require(model.count == size)
                for index in stride(from: k, to: size / stripe, by: connections) {
                    let range = (index * stripe)..<((index + 1) * stripe)
                    expected.replaceSubrange(range, with: model[range])
                }
            }
            func verify(_ when: String) async throws {
                let dump = scratch.file("dump-\(when).raw")
                let convert = try await runTool(
                    Tools.qemuImg, ["convert", "-f", "raw", "-O", "raw", daemon.uri("st"), dump])
                try #require(convert.status == 0, "\(convert)")
                let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: dump)))
                if let first = bytes.indices.first(where: { bytes[$0] != expected[$0] }) {
                    Issue.record(
                        "seed \(seed), \(when): byte \(first) (stripe \(first / stripe), connection \(first / stripe % connections)) is \(bytes[first]), expected \(expected[first])"
                    )
                }
            }
            try await verify("live")
            try await daemon.expectHealthy()
            // Every connection ended with FLUSH: all of it survives kill -9.
            try await daemon.kill9()
            try await daemon.restart()
            try await verify("after kill -9")
            try await daemon.expectHealthy()
        }
    }
}
