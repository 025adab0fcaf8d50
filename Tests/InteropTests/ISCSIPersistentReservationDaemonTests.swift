import Foundation
import InteropSupport
import Testing

/// Persistent reservations that survive a restart (APTPL, SPC-4 §5.13.5), driven through libiscsi itself
/// (its C API from Python's ctypes: libiscsi-bin's tools send no PERSISTENT RESERVE OUT with APTPL).
@Suite("SCSI persistent reservations through a restart (APTPL)")
struct ISCSIPersistentReservationDaemonTests {
    /// `URL INITIATOR ACTION...`: each action `register:KEY:APTPL` (REGISTER AND IGNORE EXISTING KEY),
    /// `reserve:KEY:TYPE`, `keys`, `reservation`, `caps`; prints one JSON object per action.
    static let client = #"""
        import ctypes, json, sys
        from libiscsi_session import connect, lib, prout, task

        url, initiator, actions = sys.argv[1], sys.argv[2], sys.argv[3:]
        ctx, lun = connect(url, initiator)

        def status(pointer):
            return task(ctx, pointer).status

        def prin(action):
            pointer = lib.iscsi_persistent_reserve_in_sync(ctx, lun, action, 4096)
            if status(pointer) != 0:
                sys.exit("PERSISTENT RESERVE IN %d: status %d" % (action, status(pointer)))
            return ctypes.c_void_p(lib.scsi_datain_unmarshall(pointer)).value

        for action in actions:
            verb, *args = action.split(":")
            if verb == "register":
                pointer = prout(ctx, lun, 6, sa_key=int(args[0], 0), aptpl=int(args[1]))
                print(json.dumps({"action": action, "status": status(pointer)}))
            elif verb == "reserve":
                pointer = prout(ctx, lun, 1, key=int(args[0], 0), kind=int(args[1]))
                print(json.dumps({"action": action, "status": status(pointer)}))
            elif verb == "keys":
                data = prin(0)
                generation = ctypes.c_uint32.from_address(data).value
                count = ctypes.c_int.from_address(data + 8).value
                keys = [ctypes.c_uint64.from_address(data + 16 + 8 * i).value for i in range(count)]
                print(json.dumps({"action": action, "generation": generation, "keys": keys}))
            elif verb == "reservation":
                data = prin(1)
                held = ctypes.c_int.from_address(data + 8).value
                key = ctypes.c_uint64.from_address(data + 16).value if held else None
                kind = ctypes.c_uint8.from_address(data + 25).value if held else None
                print(json.dumps({"action": action, "key": key, "type": kind}))
            elif verb == "caps":
                # libiscsi's unmarshalling reads PTPL_C but not PTPL_A (unit tests check that bit).
                data = prin(2)
                print(json.dumps({"action": action, "ptpl_c": ctypes.c_uint8.from_address(data + 5).value}))
        """#

    /// Runs the client's actions as `initiator`; the JSON object each printed.
    static func run(_ daemon: TestDaemon, _ initiator: String, _ actions: [String]) async throws -> [[String: Any]] {
        let result = try await runPython(client, [try daemon.iscsiURL("shared"), initiator] + actions, timeout: 60)
        try #require(result.status == 0, "\(result)")
        return result.stdout.split(separator: "\n").compactMap {
            try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
        }
    }

    static let first = "iqn.2026-12.dev.cairn:test-first"
    static let second = "iqn.2026-12.dev.cairn:test-second"

    @Test("with APTPL, registrations and the reservation survive kill -9; the last REGISTER without it forgets them")
    func aptplSurvivesRestart() async throws {
        try await withDaemon { daemon in
            try await daemon.createVolume("shared", "64M")
            // PTPL_C: this target can keep them.
            var out = try await Self.run(daemon, Self.first, ["caps", "register:0xAB:1", "reserve:0xAB:1", "reservation"])
            #expect(out.count == 4, "\(out)")
            #expect(out.first?["ptpl_c"] as? Int == 1, "\(out)")
            #expect(out.dropFirst().prefix(2).allSatisfy { $0["status"] as? Int == 0 }, "\(out)")
            #expect(out.last?["key"] as? UInt64 == 0xAB && out.last?["type"] as? Int == 1, "\(out)")
            out = try await Self.run(daemon, Self.second, ["register:0xCD:1", "keys"])
            #expect(out.last?["keys"] as? [UInt64] == [0xAB, 0xCD], "\(out)")
            let generation = out.last?["generation"] as? Int

            // Answered means durable: a kill -9 right after loses none of it.
            try await daemon.kill9()
            try await daemon.restart()
            out = try await Self.run(daemon, Self.second, ["keys", "reservation"])
            #expect(out.count == 2, "\(out)")
            #expect(out[0]["keys"] as? [UInt64] == [0xAB, 0xCD], "\(out)")
            #expect(out[0]["generation"] as? Int == generation, "\(out)")
            #expect(out[1]["key"] as? UInt64 == 0xAB && out[1]["type"] as? Int == 1, "\(out)")
            // The reservation is the first initiator's (Write Exclusive): the second, registered but not
            // the holder, may not write.
            let write = try await runTool(
                Tools.qemuIO,
                ["-f", "raw", "--image-opts",
                 "driver=iscsi,transport=tcp,portal=127.0.0.1:\(try daemon.iscsiPort()),target=\(ISCSITools.prefix)shared,lun=0,initiator-name=\(Self.second)",
                 "-c", "write -P 1 0 4k"],
                timeout: 60)
            #expect(write.status != 0 || write.stdout.contains("error") || write.stderr.contains("rror"), "\(write)")

            // A REGISTER without APTPL turns it off for everything: a restart then forgets it all.
            out = try await Self.run(daemon, Self.second, ["register:0xCE:0"])
            #expect(out.first?["status"] as? Int == 0, "\(out)")
            try await daemon.kill9()
            try await daemon.restart()
            out = try await Self.run(daemon, Self.first, ["keys", "reservation"])
            #expect(out.first?["keys"] as? [UInt64] == [], "\(out)")
            #expect(out.last?["key"] is NSNull, "\(out)")
        }
    }
}
