import NIOCore

/// The key=value text of Login and Text PDUs (RFC 7143 §6.1): UTF-8 pairs, each ended by a NUL byte.
public enum ISCSITextParameters {
    /// RFC 7143 §6.1: "A key-name MUST NOT exceed 63 bytes".
    public static let maximumKeyLength = 63
    /// RFC 7143 §6.1: values up to 255 bytes, except where a key says otherwise (text values of
    /// "large" keys up to 8192).
    public static let maximumValueLength = 8192

    /// A pair that is not `key=value` with a legal key.
    public struct Malformed: Error, Sendable, Equatable {
        public var text: String
    }

    /// The pairs of `data`, in order. Empty strings between NULs (padding, a trailing NUL) are skipped.
    public static func parse(_ data: ByteBuffer) throws(Malformed) -> [(key: String, value: String)] {
        var pairs: [(key: String, value: String)] = []
        let bytes = data.readableBytesView
        for part in bytes.split(separator: 0, omittingEmptySubsequences: true) {
            let text = String(decoding: part, as: UTF8.self)
            guard let equals = part.firstIndex(of: UInt8(ascii: "=")) else { throw Malformed(text: text) }
            let key = String(decoding: part[part.startIndex..<equals], as: UTF8.self)
            let value = String(decoding: part[(equals + 1)...], as: UTF8.self)
            guard !key.isEmpty, key.utf8.count <= maximumKeyLength, value.utf8.count <= maximumValueLength,
                key.utf8.allSatisfy({ isKeyCharacter($0) })
            else { throw Malformed(text: text) }
            pairs.append((key, value))
        }
        return pairs
    }

    /// RFC 7143 §6.1: key names are letters, digits, '.', '-', '+', '@', '_'.
    static func isKeyCharacter(_ c: UInt8) -> Bool {
        (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) || (c >= 0x30 && c <= 0x39)
            || c == UInt8(ascii: ".") || c == UInt8(ascii: "-") || c == UInt8(ascii: "+")
            || c == UInt8(ascii: "@") || c == UInt8(ascii: "_")
    }

    /// `pairs` as a data segment.
    public static func encode(_ pairs: [(key: String, value: String)]) -> ByteBuffer {
        var buffer = ByteBuffer()
        for (key, value) in pairs {
            buffer.writeString(key)
            buffer.writeInteger(UInt8(ascii: "="))
            buffer.writeString(value)
            buffer.writeInteger(UInt8(0))
        }
        return buffer
    }
}
