import NBDProtocol

/// An NBD URI as qemu and libnbd write it (https://github.com/NetworkBlockDevice/nbd/blob/master/doc/uri.md):
/// `nbd://HOST[:PORT][/EXPORT]`, or `nbds://[USER@]HOST[:PORT][/EXPORT][?QUERY]` for TLS with libnbd's
/// query keys `tls-certificates=DIR` and `tls-psk-file=FILE` (USER names the key). Not `nbd+unix`.
public struct NBDURI: Sendable, Hashable, CustomStringConvertible {
    /// IANA's port for NBD, the URI default.
    public static let defaultPort = 10809

    public var host: String
    public var port: Int
    /// The export name: the path without its leading '/', percent-decoded ("" is the default export).
    public var exportName: String
    /// `nbds://`: STARTTLS before anything else.
    public var tls = false
    /// The user part (`nbds://alice@host`), the PSK identity.
    public var user: String?
    /// `tls-certificates=DIR`.
    public var tlsCertificates: String?
    /// `tls-psk-file=FILE`.
    public var tlsPSKFile: String?

    public init(host: String, port: Int = NBDURI.defaultPort, exportName: String) {
        self.host = host
        self.port = port
        self.exportName = exportName
    }

    /// Parses `nbd://HOST[:PORT][/EXPORT]` and `nbds://...`; IPv6 hosts in brackets.
    public init(parsing text: String) throws(NBDClientError) {
        let secure = text.hasPrefix("nbds://")
        let scheme = secure ? "nbds://" : "nbd://"
        guard text.hasPrefix(scheme) else { throw .invalidURI("'\(text)' does not start with nbd:// or nbds://") }
        var rest = text.dropFirst(scheme.count)
        var query: Substring = ""
        if let mark = rest.firstIndex(of: "?") {
            query = rest[rest.index(after: mark)...]
            rest = rest[..<mark]
        }
        var authority = rest.prefix { $0 != "/" }
        let path = rest.dropFirst(authority.count).dropFirst()
        var user: String?
        if let at = authority.lastIndex(of: "@") {
            user = Self.percentDecoded(authority[..<at])
            authority = authority[authority.index(after: at)...]
        }
        var host = Substring(authority)
        var port = Self.defaultPort
        if authority.hasPrefix("[") {
            guard let close = authority.firstIndex(of: "]") else { throw .invalidURI("unclosed '[' in '\(text)'") }
            host = authority[authority.index(after: authority.startIndex)..<close]
            let after = authority[authority.index(after: close)...]
            if !after.isEmpty {
                guard after.hasPrefix(":"), let value = Int(after.dropFirst()) else {
                    throw .invalidURI("bad port in '\(text)'")
                }
                port = value
            }
        } else if let colon = authority.lastIndex(of: ":") {
            host = authority[..<colon]
            guard let value = Int(authority[authority.index(after: colon)...]) else {
                throw .invalidURI("bad port in '\(text)'")
            }
            port = value
        }
        guard !host.isEmpty else { throw .invalidURI("no host in '\(text)'") }
        guard (1...65535).contains(port) else { throw .invalidURI("port \(port) out of range") }
        guard let name = Self.percentDecoded(path) else { throw .invalidURI("bad percent escape in '\(text)'") }
        self.init(host: String(host), port: port, exportName: name)
        self.tls = secure
        self.user = user
        for pair in query.split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1)
            guard parts.count == 2, let value = Self.percentDecoded(parts[1]) else {
                throw .invalidURI("bad query parameter '\(pair)' in '\(text)'")
            }
            switch parts[0] {
            case "tls-certificates": tlsCertificates = value
            case "tls-psk-file": tlsPSKFile = value
            default: throw .invalidURI("unknown query parameter '\(parts[0])' (tls-certificates, tls-psk-file)")
            }
        }
        if !secure, tlsCertificates != nil || tlsPSKFile != nil {
            throw .invalidURI("TLS parameters need an nbds:// URI")
        }
    }

    /// The TLS credentials the URI names: a PSK file (with the user), else a certificate directory, else
    /// the CA directory libnbd defaults to. nil for plain `nbd://`.
    public func tlsCredentials() throws(NBDClientError) -> NBDClientTLS? {
        guard tls else { return nil }
        if let file = tlsPSKFile {
            guard let user else { throw .invalidURI("tls-psk-file needs a user: nbds://USER@HOST/...") }
            return try NBDClientTLS.preSharedKey(username: user, keyFile: file, host: host)
        }
        return try NBDClientTLS.certificates(directory: tlsCertificates ?? "/etc/pki/libnbd", host: host)
    }

    public var description: String {
        let shownHost = host.contains(":") ? "[\(host)]" : host
        return "\(tls ? "nbds" : "nbd")://\(shownHost):\(port)/\(exportName)"
    }

    static func percentDecoded(_ text: Substring) -> String? {
        var bytes: [UInt8] = []
        var iterator = text.utf8.makeIterator()
        while let byte = iterator.next() {
            guard byte == UInt8(ascii: "%") else {
                bytes.append(byte)
                continue
            }
            guard let high = iterator.next().flatMap(NBDHex.digit), let low = iterator.next().flatMap(NBDHex.digit) else {
                return nil
            }
            bytes.append(high << 4 | low)
        }
        return String(validating: bytes, as: UTF8.self)
    }
}
