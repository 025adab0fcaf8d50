import ArgumentParser
import AsyncHTTPClient
import CairnAPI
import Foundation
import NIOCore
import NIOHTTP1

/// A failed API call, carrying what the CLI prints and the exit code it uses.
struct CLIError: Error, CustomStringConvertible {
    var message: String
    var exitCode: Int32
    var description: String { message }
}

/// Talks JSON to the daemon's management API over its unix socket (or loopback TCP).
struct APIClient {
    /// Where the API is: "unix:/path/cairn.sock" or "http://127.0.0.1:PORT".
    let endpoint: String
    /// Bearer token for an API on TCP.
    var token: String? = nil
    /// Long enough for a pool check or a large volume delete on a slow disk.
    private static let timeout: TimeAmount = .seconds(120)
    /// A local daemon accepts at once or not at all: fail fast, without the default retries with backoff
    /// (they turned "daemon not running" into a 90-second wait).
    private static let connectTimeout: TimeAmount = .seconds(3)

    private static let http: HTTPClient = {
        var configuration = HTTPClient.Configuration()
        configuration.timeout = HTTPClient.Configuration.Timeout(connect: connectTimeout, read: timeout)
        configuration.connectionPool.retryConnectionEstablishment = false
        return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }()

    func get<T: Decodable>(_ path: String, as type: T.Type) async throws -> T {
        try decode(try await send(.GET, path, body: nil), as: T.self)
    }

    func send<T: Decodable>(_ method: HTTPMethod, _ path: String, body: some Encodable, as type: T.Type)
        async throws -> T
    {
        try decode(try await send(method, path, body: try JSONEncoder().encode(body)), as: T.self)
    }

    /// Sends a request; returns the body of a 2xx response, throws `CLIError` otherwise.
    @discardableResult
    func send(_ method: HTTPMethod, _ path: String, body: Data?) async throws -> Data {
        var request = HTTPClientRequest(url: try url(for: path))
        request.method = method
        if let token { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
        if let body {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(bytes: body))
        }
        let response: HTTPClientResponse
        let bytes: ByteBuffer
        do {
            response = try await Self.http.execute(request, timeout: Self.timeout)
            bytes = try await response.body.collect(upTo: 64 << 20)
        } catch {
            throw CLIError(
                message: "cannot reach the cairn daemon at \(endpoint): \(error). Is `cairn serve` running "
                    + "with the same --data-dir?",
                exitCode: ExitStatus.unavailable)
        }
        let data = Data(bytes.readableBytesView)
        guard (200..<300).contains(response.status.code) else {
            if let failure = try? JSONDecoder().decode(APIErrorBody.self, from: data) {
                throw CLIError(message: failure.error.message, exitCode: ExitStatus.forAPICode(failure.error.code))
            }
            throw CLIError(message: "the daemon answered \(response.status)", exitCode: ExitStatus.failure)
        }
        return data
    }

    private func decode<T: Decodable>(_ data: Data, as type: T.Type) throws -> T {
        do {
            return try JSONDecoder().decode(T.self, from: data)
        } catch {
            throw CLIError(message: "unexpected answer from the daemon: \(error)", exitCode: ExitStatus.failure)
        }
    }

    private func url(for path: String) throws -> String {
        if endpoint.hasPrefix("unix:") {
            let socket = String(endpoint.dropFirst("unix:".count))
            guard let host = socket.addingPercentEncoding(withAllowedCharacters: .alphanumerics) else {
                throw CLIError(message: "bad socket path \(socket)", exitCode: ExitStatus.usage)
            }
            return "http+unix://\(host)\(path)"
        }
        return endpoint + path
    }
}

/// Exit codes that mean something to scripts.
enum ExitStatus {
    static let success: Int32 = 0
    /// Anything not listed below.
    static let failure: Int32 = 1
    /// The named volume or snapshot does not exist.
    static let notFound: Int32 = 3
    /// Refused because of the current state: exists already, in use, would lose data.
    static let conflict: Int32 = 4
    /// The pool is out of space.
    static let noSpace: Int32 = 5
    /// The pool check found problems.
    static let unhealthy: Int32 = 6
    /// `cairn serve`: the pool was taken over by another node (this one was fenced) and serving stopped.
    static let fenced: Int32 = 7
    /// `cairn serve`: the Ceph cluster holding the pool cannot be reached (sysexits EX_TEMPFAIL).
    static let clusterUnreachable: Int32 = 75
    /// Bad arguments (sysexits EX_USAGE, as ArgumentParser uses).
    static let usage: Int32 = 64
    /// The daemon cannot be reached (sysexits EX_UNAVAILABLE).
    static let unavailable: Int32 = 69
    /// The API refused the token (sysexits EX_NOPERM).
    static let notAuthorized: Int32 = 77

    static func forAPICode(_ code: String) -> Int32 {
        switch code {
        case "not_found": notFound
        case "already_exists", "busy", "would_lose_data", "read_only": conflict
        case "diverged", "wrong_state", "not_configured": conflict
        case "no_space": noSpace
        case "unauthorized": notAuthorized
        case "invalid_argument", "invalid_request": usage
        default: failure
        }
    }
}
