import CairnAPI
import Foundation
import InteropSupport
import Testing

/// The management API spoken directly (HTTP/1.1 + JSON on the unix socket, from Debian's python3), for
/// what the CLI never sends: malformed bodies, wrong types, unknown routes, encoded names.
@Suite("management API against cairn serve")
struct ManagementAPIDaemonTests {
    /// Sends requests given as JSON [[method, path, body-or-null], ...]; prints [[status, body], ...].
    static let client = """
        import http.client, json, socket, sys
        class UnixConnection(http.client.HTTPConnection):
            def __init__(self, path):
                super().__init__("localhost", timeout=30)
                self.unix_path = path
            def connect(self):
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.connect(self.unix_path)
        results = []
        for method, path, body in json.loads(sys.argv[2]):
            c = UnixConnection(sys.argv[1])
            headers = {"Content-Type": "application/json"} if body is not None else {}
            c.request(method, path, body=body.encode("latin-1") if body is not None else None, headers=headers)
            r = c.getresponse()
            results.append([r.status, r.read().decode("utf-8", "replace")])
            c.close()
        print(json.dumps(results))
        """

    struct Reply {
        var status: Int
        var body: String
        var json: Any? { try? parseJSON(body) }
        var errorCode: String? { ((json as? [String: Any])?["error"] as? [String: Any])?["code"] as? String }
        var errorMessage: String? { ((json as? [String: Any])?["error"] as? [String: Any])?["message"] as? String }
    }

    static func send(_ daemon: TestDaemon, _ requests: [(String, String, String?)]) async throws -> [Reply] {
        let encoded = requests.map { [$0.0, $0.1, $0.2 as Any? ?? NSNull()] as [Any] }
        let argument = String(decoding: try JSONSerialization.data(withJSONObject: encoded), as: UTF8.self)
        let result = try await runPython(client, [daemon.dataDirectory + "/cairn.sock", argument])
        guard result.status == 0, let rows = try parseJSON(result.stdout) as? [[Any]] else {
            throw TestDaemonError("API client: \(result)")
        }
        return rows.map { Reply(status: $0[0] as? Int ?? 0, body: $0[1] as? String ?? "") }
    }

    @Test("good requests: health, create, get, patch, delete, pool status and check")
    func goodRequests() async throws {
        try await withDaemon { daemon in
            let replies = try await Self.send(
                daemon,
                [
                    ("GET", "/v1/health", nil),
                    ("POST", "/v1/volumes", #"{"name": "api1", "size": 1048576}"#),
                    ("POST", "/v1/volumes", #"{"name": "api2", "size": 2097152, "chunkSize": 131072}"#),
                    ("GET", "/v1/volumes/api1", nil),
                    ("PATCH", "/v1/volumes/api1", #"{"size": 4194304}"#),
                    ("PATCH", "/v1/volumes/api1", #"{"name": "api3"}"#),
                    ("PATCH", "/v1/volumes/api3", #"{"name": "api4", "size": 3145728}"#),
                    ("GET", "/v1/volumes", nil),
                    ("DELETE", "/v1/volumes/api2", nil),
                    ("GET", "/v1/pool", nil),
                    ("POST", "/v1/pool/check", nil),
                ])
            #expect(replies[0].status == 200 && replies[0].body == "ok\n", "\(replies[0])")
            #expect(replies[1].status == 201 && replies[2].status == 201, "\(replies[1]) \(replies[2])")
            let created = try JSONDecoder().decode(VolumeDTO.self, from: Data(replies[2].body.utf8))
            #expect(created.chunkSize == 131072 && created.size == 2 * UInt64(MiB))
            #expect(replies[3].status == 200 && replies[4].status == 200 && replies[5].status == 200)
            #expect(replies[6].status == 200, "\(replies[6])")
            let renamed = try JSONDecoder().decode(VolumeDTO.self, from: Data(replies[6].body.utf8))
            #expect(renamed.name == "api4" && renamed.size == 3 * UInt64(MiB), "\(renamed)")
            let list = try JSONDecoder().decode([VolumeDTO].self, from: Data(replies[7].body.utf8))
            #expect(list.map(\.name) == ["api2", "api4"])
            #expect(replies[8].status == 204 && replies[8].body.isEmpty, "\(replies[8])")
            let pool = try JSONDecoder().decode(PoolStatusDTO.self, from: Data(replies[9].body.utf8))
            #expect(pool.volumeCount == 1 && pool.provisionedBytes == 3 * UInt64(MiB), "\(pool)")
            let check = try JSONDecoder().decode(PoolCheckDTO.self, from: Data(replies[10].body.utf8))
            #expect(check.healthy && check.volumes == 1, "\(check)")
            // Created through the API, exported at once.
            let info = try await runTool(Tools.nbdinfo, ["--size", daemon.uri("api4")])
            #expect(info.stdout.hasPrefix("\(3 * MiB)"), "\(info)")
        }
    }

    @Test("bad requests get a JSON error body with a stable code and the right HTTP status")
    func badRequests() async throws {
        try await withDaemon { daemon in
            try await daemon.createVolume("exists", "1M")
            let cases: [(request: (String, String, String?), status: Int, code: String)] = [
                (("POST", "/v1/volumes", "{not json"), 400, "invalid_request"),
                (("POST", "/v1/volumes", #"{"name": "x"}"#), 400, "invalid_request"),
                (("POST", "/v1/volumes", #"{"name": "x", "size": -1}"#), 400, "invalid_request"),
                (("POST", "/v1/volumes", #"{"name": "x", "size": "1M"}"#), 400, "invalid_request"),
                (("POST", "/v1/volumes", #"{"name": "x", "size": 1.5}"#), 400, "invalid_request"),
                (("POST", "/v1/volumes", #"{"name": 7, "size": 512}"#), 400, "invalid_request"),
                (("POST", "/v1/volumes", #"{"name": "x", "size": 0}"#), 400, "invalid_argument"),
                (("POST", "/v1/volumes", #"{"name": "x", "size": 1000}"#), 400, "invalid_argument"),
                (("POST", "/v1/volumes", #"{"name": "x", "size": 18446744073709551615}"#), 400, "invalid_argument"),
                (("POST", "/v1/volumes", #"{"name": "x", "size": 18446744073709551616}"#), 400, "invalid_request"),
                (
                    ("POST", "/v1/volumes", #"{"name": "x", "size": 1048576, "chunkSize": 3000}"#), 400,
                    "invalid_argument"
                ),
                (("POST", "/v1/volumes", #"{"name": "x", "size": 1048576, "chunkSize": 0}"#), 400, "invalid_argument"),
                (("POST", "/v1/volumes", #"{"name": "a/b", "size": 512}"#), 400, "invalid_argument"),
                (("POST", "/v1/volumes", #"{"name": "a@b", "size": 512}"#), 400, "invalid_argument"),
                (("POST", "/v1/volumes", #"{"name": "..", "size": 512}"#), 400, "invalid_argument"),
                (("POST", "/v1/volumes", #"{"name": "", "size": 512}"#), 400, "invalid_argument"),
                (("POST", "/v1/volumes", #"{"name": "a\u0000b", "size": 512}"#), 400, "invalid_argument"),
                (("POST", "/v1/volumes", #"{"name": "a\u001bb", "size": 512}"#), 400, "invalid_argument"),
                (("POST", "/v1/volumes", #"{"name": "exists", "size": 512}"#), 409, "already_exists"),
                (("GET", "/v1/volumes/nope", nil), 404, "not_found"),
                (("PATCH", "/v1/volumes/nope", #"{"size": 512}"#), 404, "not_found"),
                (("PATCH", "/v1/volumes/exists", "{}"), 400, "invalid_argument"),
                (("PATCH", "/v1/volumes/exists", #"{"size": 1000}"#), 400, "invalid_argument"),
                (("PATCH", "/v1/volumes/exists", #"{"name": "bad name"}"#), 400, "invalid_argument"),
                (("DELETE", "/v1/volumes/nope", nil), 404, "not_found"),
                (("GET", "/v1/nothing-here", nil), 404, "not_found"),
                (("GET", "/v1/volumes/exists/extra", nil), 404, "not_found"),
                (("GET", "/v1/volumes/%65xists%2F..", nil), 404, "not_found"),
            ]
            let replies = try await Self.send(daemon, cases.map(\.request))
            for (index, reply) in replies.enumerated() {
                let expected = cases[index]
                #expect(
                    reply.status == expected.status && reply.errorCode == expected.code,
                    "\(expected.request.0) \(expected.request.1) \(expected.request.2 ?? ""): got \(reply.status) \(reply.body)"
                )
                #expect(reply.errorMessage.map { !$0.isEmpty } == true, "every error has a message: \(reply.body)")
                // Control characters never come back raw in a message.
                #expect(!reply.body.contains("\u{1b}"), "\(reply.body)")
            }
            // None of that changed the pool.
            #expect(try await daemon.volumes().map(\.name) == ["exists"])
            #expect(try await daemon.volume("exists").size == UInt64(MiB))
        }
    }
}
