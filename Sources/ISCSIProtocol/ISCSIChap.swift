import Crypto

/// Who may authenticate with CHAP (RFC 7143 §12.1.3), and how this target answers mutual CHAP.
public struct ISCSIChapConfiguration: Sendable, Equatable {
    /// Initiators' CHAP names (CHAP_N) and secrets: one-way CHAP, the target checks the initiator.
    public var initiatorSecrets: [String: String]
    /// This target's CHAP name and secret for mutual CHAP (the initiator checks the target too); nil:
    /// an initiator asking for mutual CHAP is refused.
    public var target: (name: String, secret: String)?
    /// Every login must authenticate with CHAP; else an initiator offering only None gets in unnamed
    /// (and the access rules decide what it sees).
    public var required: Bool

    public init(initiatorSecrets: [String: String] = [:], target: (name: String, secret: String)? = nil, required: Bool = false) {
        self.initiatorSecrets = initiatorSecrets
        self.target = target
        self.required = required
    }

    /// No CHAP: AuthMethod=None only.
    public static let disabled = ISCSIChapConfiguration()

    /// CHAP is offered when at least one initiator secret is configured.
    public var offersChap: Bool { !initiatorSecrets.isEmpty }

    public static func == (lhs: Self, rhs: Self) -> Bool {
        lhs.initiatorSecrets == rhs.initiatorSecrets && lhs.required == rhs.required
            && lhs.target?.name == rhs.target?.name && lhs.target?.secret == rhs.target?.secret
    }
}

/// CHAP's computations and value encodings (RFC 1994 §4.1, RFC 7143 §6.1 binary values).
public enum ISCSIChap {
    /// CHAP_A value for MD5, the one algorithm RFC 7143 §12.1.3 requires (and what libiscsi and
    /// open-iscsi send by default).
    public static let md5Algorithm = "5"
    /// Challenge bytes this target sends: 16, MD5's own length (RFC 7143 §12.1.3 asks for at least that).
    public static let challengeLength = 16
    /// Largest binary value taken from an initiator (CHAP_C, CHAP_R): RFC 7143 §6.1 bounds binary values
    /// by the 8192-byte text value; 1024 bytes is far beyond any digest or sensible challenge.
    public static let maximumBinaryLength = 1024

    /// RFC 1994 §4.1: MD5 over the identifier, the secret and the challenge.
    public static func response(identifier: UInt8, secret: String, challenge: [UInt8]) -> [UInt8] {
        var md5 = Insecure.MD5()
        md5.update(data: [identifier])
        md5.update(data: Array(secret.utf8))
        md5.update(data: challenge)
        return Array(md5.finalize())
    }

    /// "0x" and lower-case hex digits.
    public static func hex(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var text = [UInt8](repeating: 0, count: bytes.count * 2)
        for (index, byte) in bytes.enumerated() {
            text[2 * index] = digits[Int(byte >> 4)]
            text[2 * index + 1] = digits[Int(byte & 0x0F)]
        }
        return "0x" + String(decoding: text, as: UTF8.self)
    }

    /// A binary value: "0x" + hex (an odd count of digits has an implied leading zero) or "0b" + base64;
    /// nil when malformed, empty or longer than `maximumBinaryLength`.
    public static func binary(_ value: String) -> [UInt8]? {
        let text = Array(value.utf8)
        guard text.count > 2, text[0] == UInt8(ascii: "0") else { return nil }
        let body = Array(text[2...])
        switch text[1] {
        case UInt8(ascii: "x"), UInt8(ascii: "X"):
            guard body.count <= 2 * maximumBinaryLength else { return nil }
            let digits = body.count % 2 == 1 ? [UInt8(ascii: "0")] + body : body
            var bytes: [UInt8] = []
            var index = 0
            while index < digits.count {
                guard let high = nibble(digits[index]), let low = nibble(digits[index + 1]) else { return nil }
                bytes.append(high << 4 | low)
                index += 2
            }
            return bytes
        case UInt8(ascii: "b"), UInt8(ascii: "B"):
            guard body.count <= 4 * maximumBinaryLength / 3 + 4 else { return nil }
            return base64(body)
        default:
            return nil
        }
    }

    static func nibble(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
        default: nil
        }
    }

    static func base64(_ text: [UInt8]) -> [UInt8]? {
        var bits: UInt32 = 0
        var count = 0
        var bytes: [UInt8] = []
        for c in text where c != UInt8(ascii: "=") {
            let value: UInt8
            switch c {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"): value = c - UInt8(ascii: "A")
            case UInt8(ascii: "a")...UInt8(ascii: "z"): value = c - UInt8(ascii: "a") + 26
            case UInt8(ascii: "0")...UInt8(ascii: "9"): value = c - UInt8(ascii: "0") + 52
            case UInt8(ascii: "+"): value = 62
            case UInt8(ascii: "/"): value = 63
            default: return nil
            }
            bits = bits << 6 | UInt32(value)
            count += 6
            if count >= 8 {
                count -= 8
                bytes.append(UInt8(truncatingIfNeeded: bits >> UInt32(count)))
            }
        }
        return bytes.isEmpty ? nil : bytes
    }

    /// Equal digests, compared in time that does not depend on where they differ.
    public static func same(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        var difference: UInt8 = 0
        for index in a.indices { difference |= a[index] ^ b[index] }
        return difference == 0
    }
}
