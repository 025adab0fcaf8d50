import Glibc

/// A failed librados call: what was being done, on which object, and the errno librados returned.
public struct RadosError: Error, Sendable, CustomStringConvertible {
    /// What was being done ("connect", "aio_write", "lock_exclusive", ...).
    public var operation: String
    /// The object, pool or cluster involved.
    public var target: String
    /// The positive errno (librados returns it negated).
    public var errno: Int32

    public init(_ operation: String, _ target: String, result: Int32) {
        self.operation = operation
        self.target = target
        self.errno = result < 0 ? -result : result
    }

    /// This client was blocklisted by the cluster: another node fenced it and owns the pool now.
    /// librados reports EBLOCKLISTED, which is ESHUTDOWN on Linux.
    public var isBlocklisted: Bool { errno == ESHUTDOWN }

    public var description: String {
        let reason = isBlocklisted ? "this client is blocklisted (fenced by another node)" : String(cString: strerror(errno))
        return "RADOS \(operation) \(target): \(reason)"
    }
}

/// Throws a `RadosError` when a librados call returned a negative errno; passes other values through.
@discardableResult
func check(_ result: Int32, _ operation: String, _ target: String) throws -> Int32 {
    if result < 0 { throw RadosError(operation, target, result: result) }
    return result
}
