import CairnAPI
import Foundation
import InteropSupport
import Testing

/// Side by side with a reference server (nbdkit's file plugin on a sparse file with the same contents):
/// the same client must see the same map and the same bytes, in comparable time.
@Suite("cairn serve side by side with nbdkit")
struct ReferenceServerDaemonTests {
    /// Writes the same layout to a Cairn volume (over NBD) and to a sparse file: 4 KiB of data every
    /// 8 KiB over the first 8 MiB of 32 MiB, each sub-block with its own byte.
    static let fill = """
        import os, sys, nbd
        h = nbd.NBD()
        h.connect_uri(sys.argv[1])
        f = os.open(sys.argv[2], os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        os.ftruncate(f, 32 << 20)
        for i in range(0, 8 << 20, 8192):
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

    /// What qemu-img map does (ORACLES.md): one BLOCK_STATUS with REQ_ONE per extent, each asking for
    /// the rest of the disk. Run against both servers in lockstep; prints the extents each saw, the wall
    /// seconds each took and the CPU seconds each server process used meanwhile.
    static let walk = """
        import json, os, sys, time, nbd
        def connect(uri):
            h = nbd.NBD()
            h.add_meta_context("base:allocation")
            h.connect_uri(uri)
            return h
        def cpu(pid):
            # utime + stime of the server process, in seconds: unlike wall time, not inflated by load.
            fields = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        pids = [int(sys.argv[3]), int(sys.argv[4])]
        servers = [connect(sys.argv[1]), connect(sys.argv[2])]
        cpu_before = [cpu(p) for p in pids]
        size = servers[0].get_size()
        assert servers[1].get_size() == size
        offsets = [0, 0]
        seconds = [0.0, 0.0]
        extents = [[], []]
        while offsets[0] < size or offsets[1] < size:
            for i, h in enumerate(servers):
                if offsets[i] >= size:
                    continue
                got = []
                start = time.perf_counter()
                h.block_status(size - offsets[i], offsets[i], lambda c, o, e, err: got.extend(e) or 0,
                               flags=nbd.CMD_FLAG_REQ_ONE)
                seconds[i] += time.perf_counter() - start
                extents[i].append([offsets[i], got[0], got[1]])
                offsets[i] += got[0]
        cpu_used = [cpu(p) - b for p, b in zip(pids, cpu_before)]
        print(json.dumps({"seconds": seconds, "cpu": cpu_used, "extents": extents}))
        """

    @Test("a fragmented volume walked like qemu-img map: same extents as nbdkit, not an order of magnitude slower")
    func fragmentedMap() async throws {
        let scratch = try ScratchDirectory("reference")
        defer { scratch.remove() }
        let file = scratch.file("same.raw")
        let socket = scratch.file("nbdkit.sock")
        try await withDaemon { daemon in
            try await daemon.createVolume("frag", "32M")
            let fill = try await runPython(Self.fill, [daemon.uri("frag"), file], timeout: 120)
            try #require(fill.status == 0, "\(fill)")
            let nbdkit = try BackgroundProcess("/usr/bin/nbdkit", ["-f", "-v", "-U", socket, "file", file])
            defer { nbdkit.cleanUp() }
            try await Self.waitUntilServing(nbdkit, socket: socket)
            let run = try await runPython(
                Self.walk,
                [
                    daemon.uri("frag"), "nbd+unix:///?socket=\(socket)", "\(daemon.process.processIdentifier)",
                    "\(nbdkit.pid)",
                ],
                timeout: 300)
            try #require(run.status == 0, "\(run)\n--- nbdkit\n\(nbdkit.summary.suffix(8000))")
            let out = try #require(try parseJSON(run.stdout) as? [String: Any], "\(run)")
            let seconds = out["seconds"] as? [Double] ?? []
            let cpu = out["cpu"] as? [Double] ?? []
            let extents = out["extents"] as? [[[Int]]] ?? []
            try #require(seconds.count == 2 && extents.count == 2, "\(run)")
            let cairnData = extents[0].filter { $0[2] & 1 == 0 }.map { $0[0]..<($0[0] + $0[1]) }
            let referenceData = extents[1].filter { $0[2] & 1 == 0 }.map { $0[0]..<($0[0] + $0[1]) }
            #expect(cairnData == referenceData, "Cairn and nbdkit disagree on the data extents")
            #expect(cairnData.count == 1024)
            let compare = try await runTool(
                Tools.qemuImg, ["compare", "-f", "raw", "-F", "raw", file, daemon.uri("frag")], timeout: 120)
            #expect(compare.status == 0, "\(compare)")

            // A server that answers REQ_ONE in time proportional to one extent walks this with a fraction of
            // a CPU second (nbdkit, qemu-nbd); one that builds a long extent list per request and throws
            // all but the first away is quadratic in the number of extents. Bound, in server CPU time (load
            // on the machine does not inflate it): ten times nbdkit, at least one second.
            try #require(cpu.count == 2, "\(run)")
            let perRequest = seconds.map { $0 / Double(max(extents[0].count, 1)) * 1000 }
            #expect(
                cpu[0] < max(1, 10 * cpu[1]),
                "REQ_ONE walk over \(extents[0].count) extents: Cairn used \(cpu[0]) CPU s (\(seconds[0]) s wall, \(perRequest[0]) ms per request), nbdkit \(cpu[1]) CPU s (\(seconds[1]) s wall, \(perRequest[1]) ms)"
            )
        }
    }

    static func waitUntilServing(_ nbdkit: BackgroundProcess, socket: String) async throws {
        let up = try await poll(timeout: 20) { FileManager.default.fileExists(atPath: socket) || !nbdkit.isRunning }
        try #require(up && nbdkit.isRunning, "nbdkit: \(nbdkit.summary)")
    }

    /// nbdkit asks for SIGTERM when its parent dies (`PR_SET_PDEATHSIG`), and Linux sends it when the
    /// *thread* that started it exits: `BackgroundProcess` spawns from a thread that never does.
    @Test("nbdkit started from a thread that then exits keeps serving")
    func startingThreadExits() async throws {
        let scratch = try ScratchDirectory("spawn")
        defer { scratch.remove() }
        let file = scratch.file("disk.raw")
        let socket = scratch.file("nbdkit.sock")
        try #require(FileManager.default.createFile(atPath: file, contents: Data(count: 1 << 20)))

        final class Started: @unchecked Sendable {
            var process: Result<BackgroundProcess, any Error>?
            /// "PID/task/TID" of the starting thread.
            var thread = ""
        }
        let started = Started()
        let done = DispatchSemaphore(value: 0)
        Thread {
            started.thread = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/thread-self")) ?? ""
            started.process = Result { try BackgroundProcess("/usr/bin/nbdkit", ["-f", "-U", socket, "file", file]) }
            done.signal()
        }.start()
        done.wait()
        let nbdkit = try #require(try started.process?.get())
        defer { nbdkit.cleanUp() }
        try #require(started.thread.contains("/task/"), "no thread id: '\(started.thread)'")
        let gone = try await poll(timeout: 30) { !FileManager.default.fileExists(atPath: "/proc/\(started.thread)") }
        try #require(gone, "the starting thread \(started.thread) did not exit")

        // The thread's exit has sent whatever death signal it was going to; nbdkit must still serve.
        try await Self.waitUntilServing(nbdkit, socket: socket)
        let info = try await runTool("/usr/bin/nbdinfo", ["--size", "nbd+unix:///?socket=\(socket)"], timeout: 30)
        #expect(info.status == 0 && info.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "1048576", "\(info)")
        #expect(nbdkit.isRunning, "nbdkit stopped: \(nbdkit.summary)")
    }
}
