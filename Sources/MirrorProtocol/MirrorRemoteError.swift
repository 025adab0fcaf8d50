import NIOCore

/// A typed refusal from the other node (the target validates each management frame against
/// its own tables and answers with the type and nature of the error). Carried in an error reply as
/// code (UInt16) + message (string). The primary's CLI shows `message`, which is written to be acted on.
public struct MirrorRemoteError: Error, Sendable, Equatable, CustomStringConvertible {
    /// Extensible error classes; values are stable on the wire.
    public struct Code: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
        public let rawValue: UInt16
        public init(rawValue: UInt16) { self.rawValue = rawValue }

        /// The payload failed its checksum: send the same frame again.
        public static let checksumMismatch = Code(rawValue: 1)
        /// The frame could not be parsed, or came at the wrong time (e.g. data before hello).
        public static let protocolViolation = Code(rawValue: 2)
        /// The hello's proof does not match this node's shared secret.
        public static let authenticationFailed = Code(rawValue: 3)
        /// The named target volume does not exist (and creating it was not asked).
        public static let unknownVolume = Code(rawValue: 10)
        /// The target volume's size differs from the primary's.
        public static let sizeMismatch = Code(rawValue: 11)
        /// The target's pool has not enough space.
        public static let noSpace = Code(rawValue: 12)
        /// An offset or length lies outside the target volume, or a handle names no paired volume.
        public static let badAddress = Code(rawValue: 13)
        /// The target volume is attached by hosts or paired with another primary.
        public static let volumeInUse = Code(rawValue: 14)
        /// The target volume was written on its own since the pair last agreed (generation mismatch).
        public static let diverged = Code(rawValue: 15)
        /// The target's storage failed (I/O error, pool stopped).
        public static let targetFailed = Code(rawValue: 16)
        /// The argument is out of range (frame size, name).
        public static let invalidArgument = Code(rawValue: 17)
        /// The target is shutting down.
        public static let shuttingDown = Code(rawValue: 18)
        /// Hosts wrote the target volume while it was severed or promoted: the primary must choose whose
        /// changes to keep (take the target's, or discard them).
        public static let targetChanged = Code(rawValue: 19)

        public var description: String {
            switch self {
            case .checksumMismatch: "checksum_mismatch"
            case .protocolViolation: "protocol_violation"
            case .authenticationFailed: "authentication_failed"
            case .unknownVolume: "unknown_volume"
            case .sizeMismatch: "size_mismatch"
            case .noSpace: "no_space"
            case .badAddress: "bad_address"
            case .volumeInUse: "volume_in_use"
            case .diverged: "diverged"
            case .targetFailed: "target_failed"
            case .invalidArgument: "invalid_argument"
            case .shuttingDown: "shutting_down"
            case .targetChanged: "target_changed"
            default: "error_\(rawValue)"
            }
        }
    }

    public var code: Code
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }

    public func encode(into buffer: inout ByteBuffer) {
        buffer.writeInteger(code.rawValue)
        buffer.writeMirrorString(message)
    }

    public static func decode(from buffer: inout ByteBuffer) throws -> MirrorRemoteError {
        let code = try buffer.readMirrorInteger(as: UInt16.self)
        return MirrorRemoteError(Code(rawValue: code), try buffer.readMirrorString())
    }
}

/// A payload field could not be read (truncated, too long, not UTF-8).
public struct MirrorPayloadError: Error, Sendable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

extension ByteBuffer {
    /// A string field: UInt16 byte count, then UTF-8.
    public mutating func writeMirrorString(_ string: String) {
        let bytes = Array(string.utf8.prefix(MirrorLimits.maximumStringLength))
        writeInteger(UInt16(bytes.count))
        writeBytes(bytes)
    }

    public mutating func readMirrorString() throws -> String {
        let length = try readMirrorInteger(as: UInt16.self)
        guard Int(length) <= MirrorLimits.maximumStringLength else {
            throw MirrorPayloadError("string field of \(length) bytes exceeds the limit")
        }
        guard let bytes = readBytes(length: Int(length)) else { throw MirrorPayloadError("truncated string field") }
        guard let string = String(validating: bytes, as: UTF8.self) else {
            throw MirrorPayloadError("string field is not UTF-8")
        }
        return string
    }

    public mutating func readMirrorInteger<T: FixedWidthInteger>(as: T.Type) throws -> T {
        guard let value = readInteger(as: T.self) else { throw MirrorPayloadError("truncated \(T.self) field") }
        return value
    }
}
