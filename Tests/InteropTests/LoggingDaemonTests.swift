import Foundation
import InteropSupport
import Testing

/// What an operator reads in the daemon's log: every API call once, with a request id that the engine's
/// lines for that call carry too; every job's start and end with its id; never the data clients write.
@Suite("structured logs against cairn serve")
struct LoggingDaemonTests {
    /// The value of `key=` in a log line (values here have no spaces).
    static func value(_ key: String, in line: Substring) -> String? {
        line.split(separator: " ").first { $0.hasPrefix(key + "=") }.map { String($0.dropFirst(key.count + 1)) }
    }

    @Test("request ids tie API calls to the engine work they caused; jobs log their id; no data bytes in logs")
    func requestAndJobIDs() async throws {
        try await withDaemon(extraArguments: ["--log-level", "debug"]) { daemon in
            try await daemon.createVolume("logged", "8M")
            // Data a client writes never reaches the log, even at debug level.
            let marker = "CAIRN-LOG-MARKER-7f3a-0123456789"  // 32 bytes: 256 copies are 8 KiB, whole sectors
            let write = try await runPython(
                """
                import nbd, sys
                h = nbd.NBD()
                h.connect_uri(sys.argv[1])
                h.pwrite(sys.argv[2].encode() * 256, 0)
                h.flush()
                h.shutdown()
                """, [daemon.uri("logged"), marker])
            try #require(write.status == 0, "\(write)")
            _ = try await daemon.cliOK(["snapshot", "create", "logged@before"])
            _ = try await daemon.cliOK(["snapshot", "delete", "logged@before", "--wait"])
            let refused = try await daemon.cli(["volume", "create", "logged", "1M"])
            #expect(refused.status != 0)

            let lines = daemon.log.split(separator: "\n")
            #expect(!daemon.log.contains(marker), "client data in the log")

            // The engine's "volume created" and the API's "api request" line share one request id.
            let created = try #require(lines.first { $0.contains("volume created") && $0.contains("volume=logged") })
            let createID = try #require(Self.value("request", in: created), "no request id: \(created)")
            let createCall = lines.first {
                $0.contains("api request") && Self.value("request", in: $0) == createID
            }
            #expect(
                createCall.map { $0.contains("http.method=POST") && $0.contains("http.status=201") } == true,
                "\(createCall ?? "no api line for request \(createID)")")

            // The deletion's request started the reclaim job; the job's end carries the same job id.
            let started = try #require(lines.first { $0.contains("job started") && $0.contains("job.kind=reclaim") })
            let job = try #require(Self.value("job", in: started))
            let deleteID = try #require(Self.value("request", in: started), "job start outside a request: \(started)")
            #expect(
                lines.contains {
                    $0.contains("api request") && $0.contains("http.method=DELETE") && Self.value("request", in: $0) == deleteID
                })
            #expect(
                lines.contains {
                    $0.contains("job finished") && Self.value("job", in: $0) == job && $0.contains("job.state=succeeded")
                }, "no end for job \(job)")

            // A refused call is logged at notice with its status, distinct ids for distinct calls.
            let refusedLine = lines.first { $0.contains("notice") && $0.contains("http.status=409") }
            #expect(refusedLine != nil, "no notice line for the refused create")
            #expect(refusedLine.flatMap { Self.value("request", in: $0) } != createID)
        }
    }
}
