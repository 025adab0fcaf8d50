import Foundation
import InteropSupport
import NBDClient
import NBDProtocol
import NIOCore
import Testing

/// `cairn copy-and-write` and `cairn cow-map` through the real CLI and daemon.
@Suite("copy-and-write CLI")
struct CopyAndWriteCLITests {
    func json(_ result: ProcessResult) throws -> Any {
        try JSONSerialization.jsonObject(with: Data(result.stdout.utf8))
    }

    @Test("copy-and-write by volume name: one round trip, only the buffer on the wire; --host-side: three")
    func copyAndWrite() async throws {
        try await withDaemon { daemon in
            try await daemon.cliOK(["volume", "create", "vol", "8M", "--chunk-size", "64K"])
            let client = try await daemon.client("vol")
            // Three source chunks of data: --count 3 below walks over them.
            try await client.write(offset: 0, data: ByteBuffer(repeating: 0x5a, count: 3 * 65536))
            await client.disconnect()
            try await daemon.cliOK(["snapshot", "create", "vol@s"])

            let offloaded =
                try json(
                    try await daemon.cliOK([
                        "copy-and-write", "vol", "--source", "0", "--target", "1M", "--offset", "4K", "--pattern",
                        "0xcd",
                        "--length", "8K", "--json",
                    ])) as? [String: Any]
            #expect(offloaded?["roundTrips"] as? Int == 1, "\(String(describing: offloaded))")
            #expect(offloaded?["bytesSent"] as? Int == 28 + 16 + 8192)
            #expect(offloaded?["chunkSize"] as? Int == 65536, "the chunk size comes from the volume")

            let verify = try await daemon.client("vol")
            let target = Array(try await verify.read(offset: 1 << 20, length: 65536).readableBytesView)
            #expect(target[..<4096].allSatisfy { $0 == 0x5a } && target[4096..<12288].allSatisfy { $0 == 0xcd })
            #expect(target[12288...].allSatisfy { $0 == 0x5a })
            await verify.disconnect()

            let uri = daemon.uri("vol")
            let hostSide =
                try json(
                    try await daemon.cliOK([
                        "copy-and-write", uri, "--source", "0", "--target", "2M", "--chunk-size", "64K", "--pattern",
                        "1",
                        "--length", "4K", "--host-side", "--count", "3", "--json",
                    ])) as? [String: Any]
            #expect(hostSide?["roundTrips"] as? Int == 3 && hostSide?["runs"] as? Int == 3)
            #expect((hostSide?["bytesReceived"] as? Int ?? 0) > 65536, "the old chunk came to the host")
            #expect((hostSide?["bytesSent"] as? Int ?? 0) > 65536 + 4096, "and went back")

            let text = try await daemon.cliOK([
                "copy-and-write", "vol", "--source", "0", "--target", "3M", "--pattern", "2", "--length", "512",
            ])
            #expect(text.stdout.contains("round trips:") && text.stdout.contains("latency:"), "\(text)")
        }
    }

    @Test("cow-map shows shared and unshared ranges; bad arguments fail with a message")
    func cowMap() async throws {
        try await withDaemon { daemon in
            try await daemon.cliOK(["volume", "create", "vol", "1M", "--chunk-size", "64K"])
            let client = try await daemon.client("vol")
            try await client.write(offset: 0, data: ByteBuffer(repeating: 1, count: 4 * 65536))
            await client.disconnect()
            try await daemon.cliOK(["snapshot", "create", "vol@s"])
            try await daemon.cliOK([
                "copy-and-write", "vol", "--source", "0", "--target", "128K", "--pattern", "7", "--length", "4K",
            ])
            let map = try json(try await daemon.cliOK(["cow-map", "vol", "--json"])) as? [[String: Any]] ?? []
            let runs = map.map {
                ($0["offset"] as? Int ?? -1, $0["length"] as? Int ?? -1, $0["shared"] as? Bool ?? false)
            }
            #expect(runs.map(\.0) == [0, 131072, 196608, 262144], "\(map)")
            #expect(runs.map(\.2) == [true, false, true, false])
            #expect(runs.last?.1 == (1 << 20) - 262144)
            let table = try await daemon.cliOK(["cow-map", daemon.uri("vol"), "--length", "128K"])
            #expect(table.stdout.contains("shared") && !table.stdout.contains("unshared"), "\(table)")

            let misaligned = try await daemon.cli([
                "copy-and-write", "vol", "--source", "100", "--target", "0", "--pattern", "1", "--length", "4K",
            ])
            #expect(misaligned.status == 64 && misaligned.stderr.contains("aligned"), "\(misaligned)")
            let snapshot = try await daemon.cli([
                "copy-and-write", daemon.uri("vol@s"), "--source", "0", "--target", "0", "--chunk-size", "64K",
                "--pattern", "1", "--length", "4K",
            ])
            #expect(snapshot.status != 0 && snapshot.stderr.contains("x-cairn:copy-on-write"), "\(snapshot)")
        }
    }
}
