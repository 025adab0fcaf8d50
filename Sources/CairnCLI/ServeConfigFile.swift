import Foundation
import Yams

/// `cairn serve --config FILE`: the daemon's settings in YAML. Every key is optional; command-line flags
/// override the file. Unknown keys are errors (a misspelt `prot:` must not silently leave the default).
///
/// ```yaml
/// data_dir: /var/lib/cairn
/// nbd: {host: 127.0.0.1, port: 10809, idle_timeout: 0, progress_timeout: 60}   # seconds; 0: off
/// iscsi: {listen: "127.0.0.1:3260"}          # or {enabled: false}
///   # chap: {required: true, users: [{name: host1, secret_file: /etc/cairn/host1.chap}],
///   #        target: {name: cairn, secret: "..."}}   # CHAP name = the session's `clients` identity
/// api: {socket: /run/cairn/cairn.sock}      # or {port: 7800, token_file: /etc/cairn/api.token}
/// tls: {mode: required, cert: /etc/cairn/server-cert.pem, key: /etc/cairn/server-key.pem}
/// access:                                    # without rules: everyone, everything, read-write
///   - {exports: ["vm-*"], clients: ["CN=backup-host"], mode: read-only}
///   - {exports: ["*"], addresses: ["127.0.0.0/8", "::1"]}
/// io: {threads: 4}
/// log: {level: info}
/// rados: {conf: /etc/ceph/ceph.conf, id: cairn, keyring: /etc/ceph/ceph.client.cairn.keyring, pool: cairn,
///         namespace: "", lease_seconds: 15, standby: false}   # the pool on Ceph instead of data_dir
/// ```
struct ServeConfigFile: Decodable, Equatable {
    struct NBD: Decodable, Equatable {
        var host: String?
        var port: Int?
        /// Seconds; 0 turns the timeout off.
        var idleTimeout: Double?
        var progressTimeout: Double?
        enum CodingKeys: String, CodingKey, CaseIterable {
            case host, port
            case idleTimeout = "idle_timeout"
            case progressTimeout = "progress_timeout"
        }
        init(from decoder: any Decoder) throws {
            try rejectUnknownKeys(decoder, CodingKeys.self)
            let c = try decoder.container(keyedBy: CodingKeys.self)
            host = try c.decodeIfPresent(String.self, forKey: .host)
            port = try c.decodeIfPresent(Int.self, forKey: .port)
            idleTimeout = try c.decodeIfPresent(Double.self, forKey: .idleTimeout)
            progressTimeout = try c.decodeIfPresent(Double.self, forKey: .progressTimeout)
        }
    }

    struct API: Decodable, Equatable {
        var socket: String?
        var port: Int?
        var tokenFile: String?
        enum CodingKeys: String, CodingKey, CaseIterable {
            case socket, port
            case tokenFile = "token_file"
        }
        init(from decoder: any Decoder) throws {
            try rejectUnknownKeys(decoder, CodingKeys.self)
            let c = try decoder.container(keyedBy: CodingKeys.self)
            socket = try c.decodeIfPresent(String.self, forKey: .socket)
            port = try c.decodeIfPresent(Int.self, forKey: .port)
            tokenFile = try c.decodeIfPresent(String.self, forKey: .tokenFile)
        }
    }

    struct TLS: Decodable, Equatable {
        var mode: String?
        var cert: String?
        var key: String?
        var ca: String?
        /// With `ca`: "required" (default) or "optional" (clients without a certificate get in, with no
        /// identity).
        var clientCertificates: String?
        /// Under `mode: selective`, the volumes (names or `prefix*`) reachable only after STARTTLS.
        var exports: [String]?
        /// A psktool key file (username:hexkey lines): TLS-PSK instead of certificates.
        var pskFile: String?
        enum CodingKeys: String, CodingKey, CaseIterable {
            case mode, cert, key, ca, exports
            case pskFile = "psk_file"
            case clientCertificates = "client_certificates"
        }
        init(from decoder: any Decoder) throws {
            try rejectUnknownKeys(decoder, CodingKeys.self)
            let c = try decoder.container(keyedBy: CodingKeys.self)
            exports = try c.decodeIfPresent([String].self, forKey: .exports)
            pskFile = try c.decodeIfPresent(String.self, forKey: .pskFile)
            clientCertificates = try c.decodeIfPresent(String.self, forKey: .clientCertificates)
            mode = try c.decodeIfPresent(String.self, forKey: .mode)
            cert = try c.decodeIfPresent(String.self, forKey: .cert)
            key = try c.decodeIfPresent(String.self, forKey: .key)
            ca = try c.decodeIfPresent(String.self, forKey: .ca)
        }
    }

    /// One export access rule (see `ExportAccessPolicy`).
    struct AccessRule: Decodable, Equatable {
        var exports: [String]
        var clients: [String]?
        var addresses: [String]?
        var mode: String?
        enum CodingKeys: String, CodingKey, CaseIterable { case exports, clients, addresses, mode }
        init(from decoder: any Decoder) throws {
            try rejectUnknownKeys(decoder, CodingKeys.self)
            let c = try decoder.container(keyedBy: CodingKeys.self)
            exports = try c.decode([String].self, forKey: .exports)
            clients = try c.decodeIfPresent([String].self, forKey: .clients)
            addresses = try c.decodeIfPresent([String].self, forKey: .addresses)
            mode = try c.decodeIfPresent(String.self, forKey: .mode)
        }
    }

    struct IO: Decodable, Equatable {
        var threads: Int?
        enum CodingKeys: String, CodingKey, CaseIterable { case threads }
        init(from decoder: any Decoder) throws {
            try rejectUnknownKeys(decoder, CodingKeys.self)
            threads = try decoder.container(keyedBy: CodingKeys.self).decodeIfPresent(Int.self, forKey: .threads)
        }
    }

    struct Log: Decodable, Equatable {
        var level: String?
        enum CodingKeys: String, CodingKey, CaseIterable { case level }
        init(from decoder: any Decoder) throws {
            try rejectUnknownKeys(decoder, CodingKeys.self)
            level = try decoder.container(keyedBy: CodingKeys.self).decodeIfPresent(String.self, forKey: .level)
        }
    }

    /// `iscsi: {listen: "127.0.0.1:3260", enabled: true, chap: {...}}`.
    struct ISCSI: Decodable, Equatable {
        var listen: String?
        var enabled: Bool?
        var chap: Chap?
        enum CodingKeys: String, CodingKey, CaseIterable { case listen, enabled, chap }
        init(from decoder: any Decoder) throws {
            try rejectUnknownKeys(decoder, CodingKeys.self)
            let c = try decoder.container(keyedBy: CodingKeys.self)
            listen = try c.decodeIfPresent(String.self, forKey: .listen)
            enabled = try c.decodeIfPresent(Bool.self, forKey: .enabled)
            chap = try c.decodeIfPresent(Chap.self, forKey: .chap)
        }
    }

    /// `chap: {required: BOOL, users: [CREDENTIAL], target: CREDENTIAL}` (ServeCommand+ISCSI.swift).
    struct Chap: Decodable, Equatable {
        var required: Bool?
        var users: [ChapCredential]?
        var target: ChapCredential?
        enum CodingKeys: String, CodingKey, CaseIterable { case required, users, target }
        init(from decoder: any Decoder) throws {
            try rejectUnknownKeys(decoder, CodingKeys.self)
            let c = try decoder.container(keyedBy: CodingKeys.self)
            required = try c.decodeIfPresent(Bool.self, forKey: .required)
            users = try c.decodeIfPresent([ChapCredential].self, forKey: .users)
            target = try c.decodeIfPresent(ChapCredential.self, forKey: .target)
        }
    }

    /// `{name: NAME, secret: TEXT}` or `{name: NAME, secret_file: PATH}`.
    struct ChapCredential: Decodable, Equatable {
        var name: String
        var secret: String?
        var secretFile: String?
        enum CodingKeys: String, CodingKey, CaseIterable {
            case name, secret
            case secretFile = "secret_file"
        }
        init(from decoder: any Decoder) throws {
            try rejectUnknownKeys(decoder, CodingKeys.self)
            let c = try decoder.container(keyedBy: CodingKeys.self)
            name = try c.decode(String.self, forKey: .name)
            secret = try c.decodeIfPresent(String.self, forKey: .secret)
            secretFile = try c.decodeIfPresent(String.self, forKey: .secretFile)
        }
    }

    var dataDir: String?
    var nbd: NBD?
    var iscsi: ISCSI?
    var api: API?
    var tls: TLS?
    var access: [AccessRule]?
    var io: IO?
    var log: Log?

    /// Remote mirroring (`cairn serve --replication-*`, `--mirror-*`).
    struct Replication: Decodable, Equatable {
        var host: String?
        var port: Int?
        var secretFile: String?
        var tlsCert: String?
        var tlsKey: String?
        var tlsCA: String?
        var timeoutMs: UInt64?
        var retries: Int?
        var alertCommand: String?
        enum CodingKeys: String, CodingKey, CaseIterable {
            case host, port, retries
            case secretFile = "secret_file"
            case tlsCert = "tls_cert"
            case tlsKey = "tls_key"
            case tlsCA = "tls_ca"
            case timeoutMs = "timeout_ms"
            case alertCommand = "alert_command"
        }
        init(from decoder: any Decoder) throws {
            try rejectUnknownKeys(decoder, CodingKeys.self)
            let c = try decoder.container(keyedBy: CodingKeys.self)
            host = try c.decodeIfPresent(String.self, forKey: .host)
            port = try c.decodeIfPresent(Int.self, forKey: .port)
            secretFile = try c.decodeIfPresent(String.self, forKey: .secretFile)
            tlsCert = try c.decodeIfPresent(String.self, forKey: .tlsCert)
            tlsKey = try c.decodeIfPresent(String.self, forKey: .tlsKey)
            tlsCA = try c.decodeIfPresent(String.self, forKey: .tlsCA)
            timeoutMs = try c.decodeIfPresent(UInt64.self, forKey: .timeoutMs)
            retries = try c.decodeIfPresent(Int.self, forKey: .retries)
            alertCommand = try c.decodeIfPresent(String.self, forKey: .alertCommand)
        }
    }

    var replication: Replication?
    /// The pool on a Ceph cluster (`cairn serve --ceph-conf ... --rados-pool ...`).
    var rados: Rados?

    /// `rados:`: the pool lives in a Ceph RADOS pool (see docs/OPERATIONS.md, "Pools on Ceph").
    struct Rados: Decodable, Equatable {
        var conf: String?
        var id: String?
        var keyring: String?
        var pool: String?
        var namespace: String?
        var leaseSeconds: Int?
        var standby: Bool?
        enum CodingKeys: String, CodingKey, CaseIterable {
            case conf, id, keyring, pool, namespace, standby
            case leaseSeconds = "lease_seconds"
        }
        init(from decoder: any Decoder) throws {
            try rejectUnknownKeys(decoder, CodingKeys.self)
            let c = try decoder.container(keyedBy: CodingKeys.self)
            conf = try c.decodeIfPresent(String.self, forKey: .conf)
            id = try c.decodeIfPresent(String.self, forKey: .id)
            keyring = try c.decodeIfPresent(String.self, forKey: .keyring)
            pool = try c.decodeIfPresent(String.self, forKey: .pool)
            namespace = try c.decodeIfPresent(String.self, forKey: .namespace)
            leaseSeconds = try c.decodeIfPresent(Int.self, forKey: .leaseSeconds)
            standby = try c.decodeIfPresent(Bool.self, forKey: .standby)
        }
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case dataDir = "data_dir"
        case nbd, api, tls, access, io, log, replication, iscsi, rados
    }

    init(from decoder: any Decoder) throws {
        try rejectUnknownKeys(decoder, CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        dataDir = try c.decodeIfPresent(String.self, forKey: .dataDir)
        nbd = try c.decodeIfPresent(NBD.self, forKey: .nbd)
        iscsi = try c.decodeIfPresent(ISCSI.self, forKey: .iscsi)
        api = try c.decodeIfPresent(API.self, forKey: .api)
        tls = try c.decodeIfPresent(TLS.self, forKey: .tls)
        access = try c.decodeIfPresent([AccessRule].self, forKey: .access)
        io = try c.decodeIfPresent(IO.self, forKey: .io)
        log = try c.decodeIfPresent(Log.self, forKey: .log)
        replication = try c.decodeIfPresent(Replication.self, forKey: .replication)
        rados = try c.decodeIfPresent(Rados.self, forKey: .rados)
    }

    /// Largest configuration file read: a few hundred bytes are expected.
    static let maximumFileSize = 1 << 20

    /// Reads and decodes `path`; the error says where and what.
    static func load(_ path: String) throws -> ServeConfigFile {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ConfigError("cannot read the configuration file \(path)")
        }
        guard data.count <= maximumFileSize else { throw ConfigError("\(path) is larger than \(maximumFileSize) bytes") }
        guard let text = String(data: data, encoding: .utf8) else { throw ConfigError("\(path) is not UTF-8 text") }
        if text.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty { return try YAMLDecoder().decode(from: "{}") }
        do {
            return try YAMLDecoder().decode(ServeConfigFile.self, from: text)
        } catch let error as DecodingError {
            throw ConfigError("\(path): \(describe(error))")
        } catch {
            throw ConfigError("\(path): not valid YAML: \(error)")
        }
    }

    static func describe(_ error: DecodingError) -> String {
        func path(_ keys: [any CodingKey]) -> String { keys.map(\.stringValue).joined(separator: ".") }
        switch error {
        case .typeMismatch(let type, let context), .valueNotFound(let type, let context):
            return "\(path(context.codingPath)): expected \(type == Int.self ? "a number" : "\(type)")"
        case .keyNotFound(let key, let context):
            return "\(path(context.codingPath + [key])): missing"
        case .dataCorrupted(let context):
            guard context.codingPath.isEmpty else { return "\(path(context.codingPath)): \(context.debugDescription)" }
            return "not valid YAML: " + (context.underlyingError.map { "\($0)" } ?? context.debugDescription)
        @unknown default:
            return "\(error)"
        }
    }
}

struct ConfigError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// Any key of a mapping, to find the ones a section does not know.
private struct AnyKey: CodingKey {
    var stringValue: String
    var intValue: Int? { nil }
    init(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { nil }
}

private func rejectUnknownKeys<Keys: CodingKey & CaseIterable>(_ decoder: any Decoder, _ known: Keys.Type) throws {
    let container = try decoder.container(keyedBy: AnyKey.self)
    let names = Set(Keys.allCases.map(\.stringValue))
    if let unknown = container.allKeys.first(where: { !names.contains($0.stringValue) }) {
        throw DecodingError.dataCorrupted(
            DecodingError.Context(
                codingPath: decoder.codingPath + [unknown],
                debugDescription: "unknown key (known here: \(names.sorted().joined(separator: ", ")))"))
    }
}
