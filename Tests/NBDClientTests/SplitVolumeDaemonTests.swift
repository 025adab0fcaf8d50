import Foundation
import InteropSupport
import NBDClient
import NBDProtocol
import NIOCore
import Testing

/// COPY_AND_WRITE and `base:allocation` on a volume a backup splits, through the real daemon:
/// a session open at T (Cairn's NBD client) copies and maps image A, new sessions (`cairn copy-and-write`,
/// `nbdinfo --map`) image B; the archive holds A.
@Suite("COPY_AND_WRITE and block status during a backup", .serialized)
struct SplitVolumeDaemonTests {
    static let chunk: UInt64 = 64 << 10

    static func json(_ result: ProcessResult) throws -> [String: Any] {
        try #require(try parseJSON(result.stdout) as? [String: Any], "\(result)")
    }

    /// Whether `position` is a hole in `map` (lengths and NBD flags from `offset`); nil past its end.
    static func isHole(_ map: [(length: UInt64, flags: UInt32)], at position: UInt64, from offset: UInt64 = 0) -> Bool? {
        var start = offset
        for extent in map {
            if position < start + extent.length { return extent.flags & 1 != 0 }
            start += extent.length
        }
        return nil
    }

    /// `nbdinfo --map --json` of `uri`: a new session.
    static func nbdinfoMap(_ uri: String) async throws -> [(length: UInt64, flags: UInt32)] {
        let result = try await runTool(Tools.nbdinfo, ["--map", "--json", uri])
        let entries = try #require(try parseJSON(result.stdout) as? [[String: Any]], "\(result)")
        return entries.map { (UInt64($0["length"] as? Int ?? 0), UInt32($0["type"] as? Int ?? 0)) }
    }

    static func bytes(_ client: NBDClient, _ offset: UInt64, _ length: Int) async throws -> [UInt8] {
        Array(try await client.read(offset: offset, length: length).readableBytesView)
    }

    @Test(arguments: ["cow", "log", "mirror"])
    func copyAndWriteAndMapFollowTheSessionsImage(method: String) async throws {
        let scratch = try ScratchDirectory("split-caw")
        defer { scratch.remove() }
        try await withDaemon { daemon in
            let c = Self.chunk
            try await daemon.cliOK(["volume", "create", "v", "4M", "--chunk-size", "64K"])
            let setup = try await daemon.client("v")
            try await setup.write(offset: 0, data: ByteBuffer(repeating: 0x11, count: Int(c)))
            try await setup.write(offset: 1 << 20, data: ByteBuffer(repeating: 0x33, count: 256 << 10))
            try await setup.flush()
            await setup.disconnect()

            let old = try await daemon.client("v", contexts: ["base:allocation", NBDCopyOnWrite.contextName])
            let archive = scratch.file("v.cbk")
            let started = try Self.json(
                try await daemon.cliOK(["backup", "start", "v", "--to", archive, "--method", method, "--json"]))
            let id = try #require(started["id"] as? String)
            #expect((started["sessionsOnA"] as? [Any])?.count == 1, "\(started)")

            // New sessions: B. A write to a hole, a trim of data, a change to the source.
            let new = try await daemon.client("v", contexts: ["base:allocation", NBDCopyOnWrite.contextName])
            try await new.write(offset: 2 << 20, data: ByteBuffer(repeating: 0x44, count: 4096))
            try await new.trim(offset: 1 << 20, length: 256 << 10)
            try await new.write(offset: 8192, data: ByteBuffer(repeating: 0x55, count: 4096))
            let cli = try await daemon.cliOK([
                "copy-and-write", "v", "--source", "0", "--target", "3M", "--offset", "4K", "--pattern", "0xcd",
                "--length", "8K", "--json",
            ])
            #expect(try Self.json(cli)["roundTrips"] as? Int == 1, "\(cli)")
            // The old session copies A's source; its copy reaches B byte for byte.
            let aTarget: UInt64 = (3 << 20) + c
            try await old.copyAndWrite(
                source: 0, target: aTarget, copySize: UInt32(c), buffer: ByteBuffer(repeating: 0xA1, count: 4096),
                bufferOffset: 0)
            var fromA = [UInt8](repeating: 0x11, count: Int(c))
            for i in 0..<4096 { fromA[i] = 0xA1 }
            var fromB = [UInt8](repeating: 0x11, count: Int(c))
            for i in 4096..<12288 { fromB[i] = 0xcd }  // over B's 0x55 at 8K
            #expect(try await Self.bytes(old, aTarget, Int(c)) == fromA)
            #expect(try await Self.bytes(new, aTarget, Int(c)) == fromA, "A's copy reached B without B's source")
            #expect(try await Self.bytes(new, 3 << 20, Int(c)) == fromB)
            #expect(try await Self.bytes(old, 3 << 20, Int(c)) == [UInt8](repeating: 0, count: Int(c)))

            // Maps: nbdinfo (a new session) sees B, the old session A.
            let mapB = try await Self.nbdinfoMap(daemon.uri("v"))
            let mapA = try await old.blockStatus(offset: 0, length: 4 << 20).map { (length: $0.length, flags: $0.flags) }
            #expect(mapB.reduce(0) { $0 + $1.length } == 4 << 20, "\(mapB)")
            #expect(Self.isHole(mapB, at: 1 << 20) == true && Self.isHole(mapA, at: 1 << 20) == false, "trimmed on B only")
            #expect(Self.isHole(mapB, at: 2 << 20) == false && Self.isHole(mapA, at: 2 << 20) == true, "written on B only")
            #expect(Self.isHole(mapB, at: 3 << 20) == false && Self.isHole(mapA, at: 3 << 20) == true, "B's copy")
            #expect(Self.isHole(mapB, at: aTarget) == false && Self.isHole(mapA, at: aTarget) == false, "A's copy")
            #expect(Self.isHole(mapB, at: 0) == false && Self.isHole(mapA, at: 3 << 19) == true)
            let mapNew = try await new.blockStatus(offset: 0, length: 4 << 20).map { (length: $0.length, flags: $0.flags) }
            #expect(Self.isHole(mapNew, at: 1 << 20) == true && Self.isHole(mapNew, at: 2 << 20) == false)

            await old.disconnect()
            var status: [String: Any] = [:]
            let done = try await poll(timeout: 120) {
                status = try Self.json(try await daemon.cliOK(["backup", "status", id, "--json"]))
                return status["phase"] as? String == "succeeded" || status["phase"] as? String == "failed"
            }
            #expect(done && status["phase"] as? String == "succeeded", "\(status)")
            try await daemon.cliOK(["backup", "restore", archive, "--to", "r"])
            let restored = try await daemon.client("r")
            #expect(try await Self.bytes(restored, aTarget, Int(c)) == fromA)
            #expect(try await Self.bytes(restored, 3 << 20, Int(c)) == [UInt8](repeating: 0, count: Int(c)))
            #expect(try await Self.bytes(restored, 1 << 20, 4096) == [UInt8](repeating: 0x33, count: 4096))
            #expect(try await Self.bytes(restored, 8192, 4096) == [UInt8](repeating: 0x11, count: 4096))
            await restored.disconnect()
            // The volume has both copies; once the backup is over, its map is the plain one.
            #expect(try await Self.bytes(new, 3 << 20, Int(c)) == fromB)
            #expect(try await Self.bytes(new, aTarget, Int(c)) == fromA)
            let after = try await Self.nbdinfoMap(daemon.uri("v"))
            #expect(Self.isHole(after, at: 1 << 20) == true && Self.isHole(after, at: 2 << 20) == false, "\(after)")
            await new.disconnect()
        }
    }
}
