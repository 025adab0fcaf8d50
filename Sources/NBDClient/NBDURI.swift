/// An NBD URI as qemu and libnbd write it (https://github.com/NetworkBlockDevice/nbd/blob/master/doc/uri.md):
/// `nbd://HOST[:PORT][/EXPORT]`. Only plain TCP: not `nbds` (TLS), `nbd+unix` or query parameters.
public struct NBDURI: Sendable, Hashable, CustomStringConvertible {
    /// IANA's port for NBD, the URI default.
    public static let defaultPort = 10809

    public var host: String
    public var port: Int
    /// The export name: the path without its leading '/', percent-decoded ("" is the default export).
    public var exportName: String

    public init(host: String, port: Int = NBDURI.defaultPort, exportName: String) {
        self.host = host
        self.port = port
        self.exportName = exportName
    }

    /// Parses `nbd://HOST[:PORT][/EXPORT]`; IPv6 hosts in brackets.
    public init(parsing text: String) throws(NBDClientError) {
        let scheme = "nbd://"
        guard text.hasPrefix(scheme) else { throw .invalidURI("'\(text)' does not start with \(scheme)") }
        let rest = text.dropFirst(scheme.count)
        let authority = rest.prefix { $0 != "/" }
        let path = rest.dropFirst(authority.count).dropFirst()
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
    }

    public var description: String {
        let shownHost = host.contains(":") ? "[\(host)]" : host
        return "nbd://\(shownHost):\(port)/\(exportName)"
    }

    private static func percentDecoded(_ text: Substring) -> String? {
        var bytes: [UInt8] = []
        var iterator = text.utf8.makeIterator()
        while let byte = iterator.next() {
            guard byte == UInt8(ascii: "%") else {
                bytes.append(byte)
                continue
            }
            guard let high = iterator.next().flatMap(hexValue), let low = iterator.next().flatMap(hexValue) else {
                return nil
            }
            bytes.append(high << 4 | low)
        }
        return String(validating: bytes, as: UTF8.self)
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}
