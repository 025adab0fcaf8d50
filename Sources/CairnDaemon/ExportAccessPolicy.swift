import Glibc
import NBDServer

/// Who may open which export, from the configuration file's `access:` rules.
///
/// Without rules every client may open every export read-write: the listener is on loopback by default,
/// and the unix socket or token guards management. With rules an export exists for a session only when
/// a rule matches its volume name, the session's certificate subject and its address: other sessions do
/// not see it in LIST, INFO says it is unknown, GO is refused exactly as for a name that does not exist.
/// The grant is read-write when any matching rule says so, else read-only.
public struct ExportAccessPolicy: Sendable {
    public struct Rule: Sendable, Equatable {
        /// Volume names: exact, or a prefix ending in `*` (`*` alone: all). A snapshot export
        /// `vol@snap` is judged by its volume.
        public var exports: [String]
        /// Certificate subjects as RFC 4514 strings ("CN=backup-host"), PSK user names, or the CHAP
        /// names iSCSI initiators authenticated as; nil: any client, with or without an identity.
        public var clients: [String]?
        /// Source addresses or CIDR ranges ("127.0.0.0/8", "::1"); nil: anywhere.
        public var addresses: [AddressRange]?
        public var readOnly: Bool

        public init(exports: [String], clients: [String]? = nil, addresses: [AddressRange]? = nil, readOnly: Bool) {
            self.exports = exports
            self.clients = clients
            self.addresses = addresses
            self.readOnly = readOnly
        }

        func matches(volume: String, session: NBDSessionInfo) -> Bool {
            guard exports.contains(where: { Self.pattern($0, matches: volume) }) else { return false }
            if let clients {
                guard let identity = session.clientIdentity, clients.contains(identity) else { return false }
            }
            if let addresses {
                guard let ip = session.remoteIP, addresses.contains(where: { $0.contains(ip) }) else { return false }
            }
            return true
        }

        static func pattern(_ pattern: String, matches name: String) -> Bool {
            pattern.hasSuffix("*") ? name.hasPrefix(pattern.dropLast()) : name == pattern
        }
    }

    public enum Grant: Sendable, Equatable {
        case readWrite
        case readOnly
    }

    public var rules: [Rule]

    public init(rules: [Rule]) { self.rules = rules }

    /// What `session` may do with the export `name` (`volume` or `volume@snapshot`); nil: nothing, not
    /// even learn that it exists.
    public func grant(export name: String, session: NBDSessionInfo) -> Grant? {
        let volume = name.split(separator: "@", maxSplits: 1).first.map(String.init) ?? name
        let matching = rules.filter { $0.matches(volume: volume, session: session) }
        if matching.isEmpty { return nil }
        return matching.contains { !$0.readOnly } ? .readWrite : .readOnly
    }
}

/// An IPv4 or IPv6 address range: an address with an optional prefix length.
public struct AddressRange: Sendable, Equatable, CustomStringConvertible {
    let bytes: [UInt8]
    let prefixLength: Int
    public let description: String

    /// Parses "10.0.0.0/8", "192.168.1.7", "::1", "fd00::/8"; nil when it is none of these.
    public init?(_ text: String) {
        let parts = text.split(separator: "/", maxSplits: 1).map(String.init)
        guard let first = parts.first, let bytes = Self.parse(first) else { return nil }
        let bits = bytes.count * 8
        let length = parts.count == 2 ? Int(parts[1]) : bits
        guard let length, (0...bits).contains(length) else { return nil }
        self.bytes = bytes
        self.prefixLength = length
        self.description = text
    }

    /// True when `address` (text, as `NBDSessionInfo.remoteIP`) is in the range. IPv4-mapped IPv6
    /// addresses count as IPv4.
    public func contains(_ address: String) -> Bool {
        guard var other = Self.parse(address) else { return false }
        if other.count == 16, bytes.count == 4, other[0..<12] == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff] {
            other = Array(other[12...])
        }
        guard other.count == bytes.count else { return false }
        var remaining = prefixLength
        for index in bytes.indices where remaining > 0 {
            let mask: UInt8 = remaining >= 8 ? 0xff : ~(0xff >> UInt8(remaining))
            if bytes[index] & mask != other[index] & mask { return false }
            remaining -= 8
        }
        return true
    }

    static func parse(_ text: String) -> [UInt8]? {
        var v4 = in_addr()
        if inet_pton(AF_INET, text, &v4) == 1 { return withUnsafeBytes(of: &v4) { Array($0) } }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, text, &v6) == 1 { return withUnsafeBytes(of: &v6) { Array($0) } }
        return nil
    }
}
