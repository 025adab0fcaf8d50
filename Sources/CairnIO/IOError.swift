import CCairnIO
import Glibc

/// A failed file operation, with the errno it failed with (never sent on any wire as is: protocol edges
/// map `kind` to their own error values).
public struct IOError: Error, Sendable, CustomStringConvertible {
    /// The class of failure that callers act on.
    public enum Kind: Sendable, Hashable {
        case noSpace
        case notSupported
        case notFound
        case permissionDenied
        case busy
        case invalid
        case io
        case other
    }

    /// What was being done ("pwrite", "open", ...).
    public var operation: String
    /// The file involved (empty when not applicable).
    public var path: String
    /// The errno value the kernel returned.
    public var errno: Int32

    public init(operation: String, path: String, errno: Int32) {
        self.operation = operation
        self.path = path
        self.errno = errno
    }

    /// Builds an error from a shim result (`-errno`).
    init(_ operation: String, _ path: String, result: Int64) {
        self.init(operation: operation, path: path, errno: Int32(truncatingIfNeeded: -result))
    }

    public var kind: Kind {
        switch errno {
        case ENOSPC, EDQUOT: .noSpace
        case EOPNOTSUPP, ENOSYS, EXDEV, ENOTTY: .notSupported
        case ENOENT: .notFound
        case EACCES, EPERM, EROFS: .permissionDenied
        case EWOULDBLOCK, EBUSY: .busy
        case EINVAL: .invalid
        case EIO: .io
        default: .other
        }
    }

    public var description: String {
        let reason = String(cString: strerror(errno))
        return path.isEmpty ? "\(operation): \(reason)" : "\(operation) \(path): \(reason)"
    }
}
