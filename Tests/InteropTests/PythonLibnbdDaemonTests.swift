import CairnAPI
import Foundation
import InteropSupport
import Testing

/// python3-libnbd against a real `cairn serve`: option mode over the volume catalog, and strict mode off
/// to send requests a careful client never would, each answered with the errno proto.md recommends.
@Suite("python3-libnbd against cairn serve")
struct PythonLibnbdDaemonTests {
    /// Runs a script with Debian's python3 and decodes the JSON object it prints last.
    static func run(_ script: String, _ arguments: [String]) async throws -> [String: Any] {
        let result = try await runPython(script, arguments)
        try #require(result.status == 0, "\(result)")
        let line = result.stdout.split(separator: "\n").last.map(String.init) ?? ""
        return try #require(try parseJSON(line) as? [String: Any], "\(result)")
    }

    @Test("option mode: opt_list shows every volume, opt_info, opt_list_meta_context, opt_go")
    func optionMode() async throws {
        let script = LibnbdScript.optionModeList + """
            h.set_export_name("two")
            h.opt_info()
            out["info_size"] = h.get_size()
            out["info_multi_conn"] = h.can_multi_conn()
            out["info_min"] = h.get_block_size(nbd.SIZE_MINIMUM)
            out["info_max"] = h.get_block_size(nbd.SIZE_MAXIMUM)
            for missing in ["missing", "one@snap", "../one", ""]:
                h.set_export_name(missing)
                try:
                    h.opt_info()
                    out["missing:" + missing] = 0
                except nbd.Error as e:
                    out["missing:" + missing] = e.errnum

            """ + LibnbdScript.goWriteAndReadBack(export: "one")
        try await withDaemon { daemon in
            try await daemon.createVolume("one", "1M")
            try await daemon.createVolume("two", "3M")
            try await daemon.createVolume("three", "512")
            let out = try await Self.run(script, ["nbd://127.0.0.1:\(daemon.nbdPort)"])
            let list = out["list"] as? [[String]] ?? []
            #expect(list.map { $0[0] } == ["one", "three", "two"], "\(out)")
            #expect(list.allSatisfy { $0[1].hasPrefix("cairn volume") }, "\(out)")
            #expect(out["info_size"] as? Int == 3 * MiB, "\(out)")
            #expect(out["info_multi_conn"] as? Bool == true, "\(out)")
            #expect(out["info_min"] as? Int == 512 && out["info_max"] as? Int == 32 * MiB, "\(out)")
            // NBD_REP_ERR_UNKNOWN → ENOENT in libnbd.
            for name in ["missing", "one@snap", "../one", ""] {
                #expect(out["missing:" + name] as? Int == Int(ENOENT), "export '\(name)': \(out)")
            }
            // An empty LIST_META_CONTEXT query lists every context the export offers (proto.md), Cairn's
            // copy-on-write extension included.
            #expect(out["contexts"] as? [String] == ["base:allocation", "x-cairn:copy-on-write"], "\(out)")
            #expect(out["size"] as? Int == MiB, "\(out)")
            #expect(out["meta"] as? Bool == true && out["structured"] as? Bool == true, "\(out)")
            #expect(out["read"] as? [Int] == [7], "\(out)")
            // The session was detached when the client left: delete is allowed again.
            try await daemon.cliOK(["volume", "delete", "one"])
        }
    }

    static let strictOffScript = LibnbdScript.attempt + """
        h = nbd.NBD()
        h.set_strict_mode(0)
        h.add_meta_context("base:allocation")
        h.connect_uri(sys.argv[1])
        size = h.get_size()
        out = {"size": size}
        attempt(out, "read_past_end", lambda: h.pread(4096, size))
        attempt(out, "read_straddling_end", lambda: h.pread(4096, size - 2048))
        attempt(out, "write_past_end", lambda: h.pwrite(b"x" * 4096, size - 2048))
        attempt(out, "zero_past_end", lambda: h.zero(4096, size - 2048))
        attempt(out, "trim_past_end", lambda: h.trim(4096, size - 2048))
        attempt(out, "cache_past_end", lambda: h.cache(4096, size))
        attempt(out, "status_past_end", lambda: h.block_status(4096, size, lambda *a: 0))
        attempt(out, "offset_overflow", lambda: h.pread(4096, (1 << 64) - 512))
        attempt(out, "misaligned_offset", lambda: h.pread(512, 256))
        attempt(out, "misaligned_length", lambda: h.pwrite(b"y" * 100, 0))
        attempt(out, "misaligned_trim", lambda: h.trim(4096, 100))
        attempt(out, "misaligned_zero", lambda: h.zero(1000, 512))
        attempt(out, "misaligned_status", lambda: h.block_status(4096, 100, lambda *a: 0))
        attempt(out, "unknown_flag", lambda: h.pread(512, 0, flags=1 << 7))
        attempt(out, "no_hole_on_write", lambda: h.pwrite(b"z" * 512, 0, flags=nbd.CMD_FLAG_NO_HOLE))
        attempt(out, "req_one_on_read", lambda: h.pread(512, 0, flags=nbd.CMD_FLAG_REQ_ONE))
        attempt(out, "fast_zero_on_trim", lambda: h.trim(4096, 0, flags=nbd.CMD_FLAG_FAST_ZERO))
        attempt(out, "read_over_max_payload", lambda: h.pread((32 << 20) + 512, 0))
        attempt(out, "zero_length_read", lambda: h.pread(0, 0))
        attempt(out, "zero_length_status", lambda: h.block_status(0, 0, lambda *a: 0))
        # What a careful client does is accepted: FLUSH, FUA on writes, zeroes and trims, FAST_ZERO.
        attempt(out, "write_fua", lambda: h.pwrite(b"\\x5a" * 8192, 65536, flags=nbd.CMD_FLAG_FUA))
        attempt(out, "flush", lambda: h.flush())
        attempt(out, "zero_fua", lambda: h.zero(4096, 69632, flags=nbd.CMD_FLAG_FUA | nbd.CMD_FLAG_NO_HOLE))
        attempt(out, "fast_zero", lambda: h.zero(8192, 131072, flags=nbd.CMD_FLAG_FAST_ZERO))
        attempt(out, "trim_fua", lambda: h.trim(262144, 65536, flags=nbd.CMD_FLAG_FUA))
        attempt(out, "cache", lambda: h.cache(65536, 0))
        attempt(out, "df_read", lambda: h.pread(65536, 0, flags=nbd.CMD_FLAG_DF))
        attempt(out, "read_max_payload", lambda: h.pread(32 << 20, 0))
        attempt(out, "write_max_payload", lambda: h.pwrite(b"\\x3c" * (32 << 20), 8 << 20))
        data = h.pread(16384, 65536)
        out["after"] = [data[0], data[4095], data[4096], data[8191], data[8192]]
        # After all these refusals the connection still works.
        h.pwrite(b"\\x11" * 512, size - 512)
        out["last_sector"] = list(set(h.pread(512, size - 512)))
        # BLOCK_STATUS with REQ_ONE: exactly one extent, starting at the offset, not past the request.
        h.pwrite(b"\\x22" * 4096, 1 << 20)
        for name, offset in [("req_one_data", 1 << 20), ("req_one_hole", (1 << 20) + 4096)]:
            got = []
            h.block_status((1 << 20) - 4096, offset,
                           lambda ctx, off, ents, err: got.append([ctx, off] + list(ents)) or 0,
                           flags=nbd.CMD_FLAG_REQ_ONE)
            out[name] = got
        h.trim((1 << 20) - 4096, size - (1 << 20))
        full = []
        h.block_status(1 << 20, size - (1 << 20), lambda ctx, off, ents, err: full.append(list(ents)) or 0)
        out["full"] = full
        h.shutdown()
        print(json.dumps(out))
        """

    @Test("strict mode off: invalid requests get the spec's errors, valid ones with FUA and FLUSH succeed")
    func invalidRequests() async throws {
        try await withDaemon { daemon in
            try await daemon.createVolume("s", "40M")
            let out = try await Self.run(Self.strictOffScript, [daemon.uri("s")])
            let expected: [String: Int32] = [
                // proto.md: reads, trims, cache and block status past the end SHOULD fail with EINVAL;
                // writes and WRITE_ZEROES SHOULD fail with ENOSPC.
                "read_past_end": EINVAL, "read_straddling_end": EINVAL, "write_past_end": ENOSPC,
                "zero_past_end": ENOSPC, "trim_past_end": EINVAL, "cache_past_end": EINVAL,
                "status_past_end": EINVAL, "offset_overflow": EINVAL,
                // Not aligned to the advertised 512-byte minimum block size: EINVAL.
                "misaligned_offset": EINVAL, "misaligned_length": EINVAL, "misaligned_trim": EINVAL,
                "misaligned_zero": EINVAL, "misaligned_status": EINVAL,
                // Unknown flags and flags not documented for the command: EINVAL.
                "unknown_flag": EINVAL, "no_hole_on_write": EINVAL, "req_one_on_read": EINVAL,
                "fast_zero_on_trim": EINVAL,
                // READ above the 32 MiB maximum payload: EOVERFLOW is what proto.md allows for a
                // command without payload (EINVAL would also be conforming).
                "read_over_max_payload": EOVERFLOW,
                "zero_length_read": 0, "zero_length_status": EINVAL,
                "write_fua": 0, "flush": 0, "zero_fua": 0, "fast_zero": 0, "trim_fua": 0, "cache": 0, "df_read": 0,
                "read_max_payload": 0, "write_max_payload": 0,
            ]
            for (name, errnum) in expected.sorted(by: { $0.key < $1.key }) {
                #expect(out[name] as? Int == Int(errnum), "\(name): got \(out[name] ?? "nothing"), want \(errnum)")
            }
            // [64k, 72k): FUA write of 0x5a, [68k, 72k) zeroed, [128k, 136k) fast-zeroed, then [64k, 320k)
            // trimmed (all whole sub-blocks), so everything there reads as zeros.
            #expect(out["after"] as? [Int] == [0, 0, 0, 0, 0], "\(out)")
            #expect(out["last_sector"] as? [Int] == [0x11], "\(out)")
            // REQ_ONE: one callback with one (length, flags) pair, never longer than the request: a data
            // sub-block (flags 0) at 1M, then a hole (HOLE|ZERO = 3) right after it.
            let data = out["req_one_data"] as? [[Any]] ?? []
            #expect(data.count == 1 && data.first?.count == 4, "\(out)")
            if let extent = data.first, extent.count == 4 {
                #expect(extent[0] as? String == "base:allocation" && extent[1] as? Int == MiB, "\(data)")
                #expect(extent[2] as? Int == 4096 && extent[3] as? Int == 0, "\(data)")
            }
            let hole = out["req_one_hole"] as? [[Any]] ?? []
            #expect(hole.count == 1 && hole.first?.count == 4, "\(out)")
            if let extent = hole.first, extent.count == 4, let length = extent[2] as? Int {
                #expect(length > 0 && length <= MiB - 4096 && extent[3] as? Int == 3, "\(hole)")
            }
            // Without REQ_ONE the extents cover the whole request: the last MiB, trimmed except for the
            // sub-block holding the sector written last.
            let full = out["full"] as? [[Int]] ?? []
            if let entries = full.first {
                let lengths = stride(from: 0, to: entries.count, by: 2).map { entries[$0] }
                let flags = stride(from: 1, to: entries.count, by: 2).map { entries[$0] }
                #expect(lengths.reduce(0, +) == MiB, "\(full)")
                #expect(flags.last == 0 && lengths.last == 4096 && flags.first == 3, "\(full)")
            } else {
                Issue.record("no block status reply: \(out)")
            }
            try await daemon.expectHealthy()
        }
    }

    @Test("FUA and FLUSH make writes durable across SIGKILL of the daemon")
    func fuaAndFlushDurable() async throws {
        let script = """
            import json, sys, nbd
            h = nbd.NBD()
            h.connect_uri(sys.argv[1])
            h.pwrite(b"\\xa1" * 65536, 0, flags=nbd.CMD_FLAG_FUA)
            h.pwrite(b"\\xa2" * 65536, 1 << 20)
            h.zero(65536, 2 << 20, flags=nbd.CMD_FLAG_NO_HOLE)
            h.pwrite(b"\\xa3" * 4096, 3 << 20)
            h.flush()
            print(json.dumps({"ok": True}))
            sys.stdout.flush()
            h.shutdown()
            """
        try await withDaemon { daemon in
            try await daemon.createVolume("f", "8M")
            try await daemon.qemuIOOK("f", ["write -P 0xff 2m 1m"])
            let out = try await Self.run(script, [daemon.uri("f")])
            #expect(out["ok"] as? Bool == true)
            try await daemon.kill9()
            try await daemon.restart()
            try await daemon.qemuIOOK(
                "f",
                [
                    "read -P 0xa1 0 64k", "read -P 0xa2 1m 64k", "read -P 0 2m 64k",
                    "read -P 0xff \(2 * MiB + 65536) 960k",
                    "read -P 0xa3 3m 4k",
                ])
            try await daemon.expectHealthy()
        }
    }
}
