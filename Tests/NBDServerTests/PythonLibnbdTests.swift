import Foundation
import InteropSupport
import NBDProtocol
import NBDServer
import Testing

/// python3-libnbd: option mode, and strict mode off to send requests a careful client never would.
@Suite("python3-libnbd")
struct PythonLibnbdTests {
    /// Runs a Python script with Debian's python3 and decodes the JSON object it prints.
    static func runScript(_ script: String, _ arguments: [String]) async throws -> [String: Any] {
        let result = try await runProcess(Tools.python, ["-c", script] + arguments)
        try #require(result.status == 0, "\(result)")
        let object = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8))
        return try #require(object as? [String: Any], "\(result)")
    }

    @Test("option mode: opt_list, opt_info, opt_list_meta_context and opt_go")
    func optionMode() async throws {
        let disk = MemoryExport(name: "disk", size: 1 << 20, description: "first")
        let other = MemoryExport(name: "other", size: 2 << 20)
        let script = LibnbdScript.optionModeList + """
            h.set_export_name("other")
            h.opt_info()
            out["info_size"] = h.get_size()
            h.set_export_name("missing")
            try:
                h.opt_info()
                out["missing"] = 0
            except nbd.Error as e:
                out["missing"] = e.errnum

            """ + LibnbdScript.goWriteAndReadBack(export: "disk")
        try await withServer([disk, other]) { server, catalog in
            let out = try await Self.runScript(script, ["nbd://127.0.0.1:\(server.port)"])
            #expect(out["list"] as? [[String]] == [["disk", "first"], ["other", ""]], "\(out)")
            #expect(out["info_size"] as? Int == 2 << 20, "\(out)")
            #expect(out["missing"] as? Int == Int(ENOENT), "NBD_REP_ERR_UNKNOWN maps to ENOENT in libnbd: \(out)")
            #expect(out["contexts"] as? [String] == ["base:allocation"], "\(out)")
            #expect(out["size"] as? Int == 1 << 20, "\(out)")
            #expect(out["meta"] as? Bool == true, "\(out)")
            #expect(out["structured"] as? Bool == true, "\(out)")
            #expect(out["read"] as? [Int] == [7], "\(out)")
            #expect(catalog.attachCount == 1)
        }
    }

    static let strictOffScript = LibnbdScript.attempt + """
        def connect(uri, structured=True, meta=True):
            h = nbd.NBD()
            h.set_strict_mode(0)
            h.set_request_structured_replies(structured)
            if meta:
                h.add_meta_context("base:allocation")
            h.connect_uri(uri)
            return h
        out = {}
        h = connect(sys.argv[1])
        size = h.get_size()
        attempt(out, "read_past_end", lambda: h.pread(4096, size))
        attempt(out, "write_past_end", lambda: h.pwrite(b"x" * 4096, size - 2048))
        attempt(out, "zero_past_end", lambda: h.zero(4096, size - 2048))
        attempt(out, "trim_past_end", lambda: h.trim(4096, size - 2048))
        attempt(out, "status_past_end", lambda: h.block_status(4096, size - 2048, lambda *a: 0))
        attempt(out, "misaligned_offset", lambda: h.pread(512, 256))
        attempt(out, "misaligned_length", lambda: h.pwrite(b"y" * 100, 0))
        attempt(out, "unknown_flag", lambda: h.pread(512, 0, flags=1 << 7))
        attempt(out, "flag_not_for_command", lambda: h.pread(512, 0, flags=nbd.CMD_FLAG_NO_HOLE))
        attempt(out, "req_one_on_read", lambda: h.pread(512, 0, flags=nbd.CMD_FLAG_REQ_ONE))
        attempt(out, "read_over_max_payload", lambda: h.pread(2 << 20, 0))
        attempt(out, "zero_length_read", lambda: h.pread(0, 0))
        attempt(out, "zero_length_write", lambda: h.pwrite(b"", 0))
        attempt(out, "zero_length_status", lambda: h.block_status(0, 0, lambda *a: 0))
        attempt(out, "fua_read", lambda: h.pread(512, 0, flags=nbd.CMD_FLAG_FUA))
        attempt(out, "df_read", lambda: h.pread(65536, 0, flags=nbd.CMD_FLAG_DF))
        h.shutdown()
        s = connect(sys.argv[1], structured=False, meta=False)
        attempt(out, "df_without_structured", lambda: s.pread(512, 0, flags=nbd.CMD_FLAG_DF))
        attempt(out, "status_without_context", lambda: s.block_status(512, 0, lambda *a: 0))
        s.pwrite(b"\\x09" * 512, 65536)
        data = s.pread(131072, 0)
        out["simple_read"] = [data[0], data[65536], data[66048]]
        s.shutdown()
        r = connect(sys.argv[2])
        attempt(out, "write_read_only", lambda: r.pwrite(b"z" * 512, 0))
        attempt(out, "trim_read_only", lambda: r.trim(512, 0))
        attempt(out, "zero_read_only", lambda: r.zero(512, 0))
        attempt(out, "flush_not_advertised", lambda: r.flush())
        r.shutdown()
        print(json.dumps(out))
        """

    /// Every refusal a client can provoke, with the error proto.md's SHOULDs ask for.
    @Test("invalid requests get the errors the spec recommends")
    func invalidRequests() async throws {
        let disk = MemoryExport(
            name: "disk",
            size: 4 << 20,
            blockSizes: NBDBlockSizeConstraints(minimum: 512, preferred: 4096, maximumPayload: 1 << 20)
        )
        let readOnly = MemoryExport(name: "ro", size: 1 << 20, capabilities: [.readOnly])
        try await withServer([disk, readOnly]) { server, _ in
            let out = try await Self.runScript(Self.strictOffScript, [server.uri("disk"), server.uri("ro")])
            let expected: [String: Int32] = [
                // "SHOULD return NBD_EINVAL if it receives a read or trim request including one or more
                // sectors beyond the size of the device"; writes and WRITE_ZEROES "SHOULD return NBD_ENOSPC".
                "read_past_end": EINVAL, "write_past_end": ENOSPC, "zero_past_end": ENOSPC,
                "trim_past_end": EINVAL, "status_past_end": EINVAL,
                // "SHOULD report an NBD_EINVAL error if the client's request is not aligned".
                "misaligned_offset": EINVAL, "misaligned_length": EINVAL,
                // Unknown flags and flags not documented for the command: EINVAL.
                "unknown_flag": EINVAL, "flag_not_for_command": EINVAL, "req_one_on_read": EINVAL,
                // A READ above the advertised maximum payload (1 MiB here).
                "read_over_max_payload": EOVERFLOW,
                // Zero lengths: "the server SHOULD NOT disconnect"; this server makes them no-ops, except
                // BLOCK_STATUS whose reply needs a nonzero extent.
                "zero_length_read": 0, "zero_length_write": 0, "zero_length_status": EINVAL,
                // FUA "is valid for all commands" once advertised; DF with structured replies.
                "fua_read": 0, "df_read": 0,
                "df_without_structured": EINVAL, "status_without_context": EINVAL,
                // "SHOULD return NBD_EPERM if it receives a write or trim request on a read-only export".
                "write_read_only": EPERM, "trim_read_only": EPERM, "zero_read_only": EPERM,
                "flush_not_advertised": EINVAL,
            ]
            for (name, errnum) in expected.sorted(by: { $0.key < $1.key }) {
                #expect(out[name] as? Int == Int(errnum), "\(name): got \(out[name] ?? "nothing"), want \(errnum)")
            }
            // Simple replies fill holes with zeroes.
            #expect(out["simple_read"] as? [Int] == [0, 9, 0], "\(out)")
            #expect(disk.counters.writes == 1, "no refused write reached the export")
        }
    }
}
