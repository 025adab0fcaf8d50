import CairnIO

/// An error from the storage engine: a code callers can switch on, a sentence a person can act on,
/// and the underlying cause when there is one. Protocol edges (NBD, HTTP) map `code` to their own
/// error values; raw errno never leaves `CairnIO`.
public struct EngineError: Error, Sendable, CustomStringConvertible {
    /// Extensible set of failure classes.
    public struct Code: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
        public let rawValue: String
        public init(rawValue: String) { self.rawValue = rawValue }
        public var description: String { rawValue }

        /// A named volume, snapshot or file does not exist.
        public static let notFound = Code(rawValue: "not_found")
        /// The name is already taken.
        public static let alreadyExists = Code(rawValue: "already_exists")
        /// An argument is malformed or out of range (size, name, offset, chunk size).
        public static let invalidArgument = Code(rawValue: "invalid_argument")
        /// An I/O range reaches past the end of the volume.
        public static let outOfRange = Code(rawValue: "out_of_range")
        /// The operation would destroy data or break a dependency and needs an explicit force.
        public static let wouldLoseData = Code(rawValue: "would_lose_data")
        /// The object is in use (attached sessions, dependent clones).
        public static let busy = Code(rawValue: "busy")
        /// The pool or the filesystem under it is full.
        public static let noSpace = Code(rawValue: "no_space")
        /// Writes to a read-only object.
        public static let readOnly = Code(rawValue: "read_only")
        /// The disk failed or data could not be made durable; the pool stops accepting writes.
        public static let ioFailure = Code(rawValue: "io_failure")
        /// Another process owns the pool.
        public static let poolLocked = Code(rawValue: "pool_locked")
        /// On-disk metadata is not something this version understands, or is inconsistent.
        public static let corrupt = Code(rawValue: "corrupt")
        /// The pool is closing or closed.
        public static let closed = Code(rawValue: "closed")
    }

    public var code: Code
    public var message: String
    public var cause: (any Error)?

    public init(_ code: Code, _ message: String, cause: (any Error)? = nil) {
        self.code = code
        self.message = message
        self.cause = cause
    }

    public var description: String {
        if let cause { return "\(message) (\(cause))" }
        return message
    }
}

extension EngineError {
    /// Wraps a file error from the I/O layer, keeping ENOSPC recognisable.
    static func io(_ what: String, _ error: any Error) -> EngineError {
        if let error = error as? EngineError { return error }
        if let ioError = error as? IOError, ioError.kind == .noSpace {
            return EngineError(.noSpace, "\(what): the filesystem under the pool is full", cause: error)
        }
        return EngineError(.ioFailure, "\(what) failed", cause: error)
    }
}
