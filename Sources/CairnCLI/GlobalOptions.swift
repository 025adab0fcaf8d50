import ArgumentParser
import CairnAPI
import CairnDaemon
import Foundation

/// Options every client command takes: which daemon to talk to and how to print.
struct ClientOptions: ParsableArguments {
    @Option(name: .long, help: "Pool directory; its cairn.sock is the API socket (default: $CAIRN_DATA or ./.cairn).")
    var dataDir: String?

    @Option(name: .long, help: "Management API endpoint: unix:/path/to/cairn.sock or http://127.0.0.1:PORT.")
    var api: String?

    @Option(
        name: .long,
        help: "Token for an API on TCP (default: $CAIRN_API_TOKEN, else the api.token file of the data directory).")
    var apiToken: String?

    @Flag(name: .long, help: "Print JSON instead of tables.")
    var json = false

    var client: APIClient {
        let directory = resolveDataDirectory(dataDir)
        guard let api else {
            return APIClient(endpoint: "unix:" + DaemonConfiguration.defaultSocketPath(dataDirectory: directory))
        }
        let token =
            apiToken ?? ProcessInfo.processInfo.environment["CAIRN_API_TOKEN"]
            ?? (try? String(
                contentsOfFile: DaemonConfiguration.defaultTokenFile(dataDirectory: directory), encoding: .utf8))?
            .trimmingCharacters(in: .whitespacesAndNewlines)
        return APIClient(endpoint: api, token: token)
    }
}

/// --data-dir, else $CAIRN_DATA, else ./.cairn; made absolute so messages and sockets are unambiguous.
func resolveDataDirectory(_ option: String?) -> String {
    let chosen = option ?? ProcessInfo.processInfo.environment["CAIRN_DATA"] ?? ".cairn"
    if chosen.hasPrefix("/") { return chosen }
    return FileManager.default.currentDirectoryPath + "/" + chosen
}

/// Parses a size argument ("10G", "512M", "1048576").
func parseSize(_ text: String, what: String = "size") throws -> UInt64 {
    guard let value = ByteSize.parse(text) else {
        throw ValidationError("'\(text)' is not a \(what): use bytes or a number with K, M, G, T (binary units)")
    }
    return value
}
