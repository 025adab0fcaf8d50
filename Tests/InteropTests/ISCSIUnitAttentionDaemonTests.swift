import Foundation
import InteropSupport
import Testing

/// Unit attentions of `cairn serve` seen by two libiscsi initiators at once (its C API from Python's
/// ctypes: libiscsi-bin has no tool that shows a UNIT ATTENTION's sense). Each login goes through
/// `iscsi_full_connect_sync`, whose TEST UNIT READY loop consumes the POWER ON report, as qemu's and the
/// test tool's logins do.
@Suite("SCSI unit attentions between two iSCSI sessions")
struct ISCSIUnitAttentionDaemonTests {
    /// `URL FIRST SECOND ACTION...`, each action run by `a:` or `b:` (the session) or `run:` (a command
    /// line, space-separated, run to completion): `tur` (prints status, sense key, ASC/ASCQ),
    /// `register:KEY`, `reserve:KEY:TYPE`, `preempt:KEY:SAKEY:TYPE`, `clear:KEY`, `capacity` (READ
    /// CAPACITY 16's block count). One JSON object per action.
    static let client = #"""
        import ctypes, json, subprocess, sys
        from libiscsi_session import connect, lib, prout, task

        url, first, second, actions = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
        sessions = {"a": connect(url, first), "b": connect(url, second)}

        def result(action, t):
            return {"action": action, "status": t.status, "key": t.sense.key if t.status == 2 else 0,
                    "ascq": "%04x" % t.sense.ascq if t.status == 2 else ""}

        for action in actions:
            who, verb, *args = action.split(":")
            if who == "run":
                done = subprocess.run(verb.split(" "), capture_output=True, text=True)
                print(json.dumps({"action": action, "exit": done.returncode, "stderr": done.stderr[-400:]}))
                continue
            ctx, lun = sessions[who]
            if verb == "tur":
                print(json.dumps(result(action, task(ctx, lib.iscsi_testunitready_sync(ctx, lun)))))
            elif verb in ("register", "reserve", "preempt", "clear"):
                if verb == "register":
                    pointer = prout(ctx, lun, 6, sa_key=int(args[0], 0))
                elif verb == "reserve":
                    pointer = prout(ctx, lun, 1, key=int(args[0], 0), kind=int(args[1]))
                elif verb == "preempt":
                    pointer = prout(ctx, lun, 4, key=int(args[0], 0), sa_key=int(args[1], 0), kind=int(args[2]))
                else:
                    pointer = prout(ctx, lun, 3, key=int(args[0], 0))
                print(json.dumps(result(action, task(ctx, pointer))))
            elif verb == "capacity":
                pointer = lib.iscsi_readcapacity16_sync(ctx, lun)
                t = task(ctx, pointer)
                out = result(action, t)
                if t.status == 0:
                    data = ctypes.c_void_p(lib.scsi_datain_unmarshall(pointer)).value
                    out["lba"] = ctypes.c_uint64.from_address(data).value
                print(json.dumps(out))
        """#

    static let first = "iqn.2026-12.dev.cairn:ua-first"
    static let second = "iqn.2026-12.dev.cairn:ua-second"

    @Test(
        "the second initiator sees REGISTRATIONS PREEMPTED and RESERVATIONS PREEMPTED, both see CAPACITY DATA HAS CHANGED after a resize, once each"
    )
    func preemptClearAndResize() async throws {
        try await withDaemon { daemon in
            try await daemon.createVolume("shared", "64M")
            let resize = [TestDaemon.binary, "volume", "resize", "shared", "128M", "--data-dir", daemon.dataDirectory]
                .joined(separator: " ")
            let actions = [
                // After the logins nothing is pending.
                "a:tur", "b:tur",
                "a:register:0xA", "b:register:0xB", "b:reserve:0xB:1",
                // The first initiator preempts the second's reservation: the second hears it once.
                "a:preempt:0xA:0xB:1", "b:tur", "b:tur", "a:tur",
                // The second registers again; the first clears everything.
                "b:register:0xB", "a:clear:0xA", "b:tur", "b:tur", "a:tur",
                // A resize through the control API: both hear it once, then READ CAPACITY has the new size.
                "run:\(resize)", "a:tur", "a:tur", "b:capacity", "b:capacity",
            ]
            let result = try await runPython(
                Self.client, [try daemon.iscsiURL("shared"), Self.first, Self.second] + actions, timeout: 120)
            try #require(result.status == 0, "\(result)")
            let out = result.stdout.split(separator: "\n").compactMap {
                try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
            }
            try #require(out.count == actions.count, "\(result)")
            func expect(_ index: Int, status: Int, ascq: String = "", sourceLocation: SourceLocation = #_sourceLocation) {
                #expect(
                    out[index]["status"] as? Int == status && out[index]["ascq"] as? String == ascq
                        && (status != 2 || out[index]["key"] as? Int == 6),
                    "\(actions[index]): \(out[index])", sourceLocation: sourceLocation)
            }
            for index in 0...4 { expect(index, status: 0) }
            expect(5, status: 0)
            expect(6, status: 2, ascq: "2a05")  // REGISTRATIONS PREEMPTED
            expect(7, status: 0)
            expect(8, status: 0)
            expect(9, status: 0)
            expect(10, status: 0)
            expect(11, status: 2, ascq: "2a03")  // RESERVATIONS PREEMPTED
            expect(12, status: 0)
            expect(13, status: 0)
            #expect(out[14]["exit"] as? Int == 0, "\(out[14])")
            expect(15, status: 2, ascq: "2a09")  // CAPACITY DATA HAS CHANGED
            expect(16, status: 0)
            expect(17, status: 2, ascq: "2a09")
            expect(18, status: 0)
            #expect(out[18]["lba"] as? Int == (128 << 20) / 512 - 1, "\(out[18])")
            #expect(daemon.process.isRunning)
        }
    }
}
