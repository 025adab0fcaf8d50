/// An error value of a reply's *error* field (proto.md "Error values"). Only these go on the wire:
/// they happen to match Linux errno values, but the server never copies a local errno here.
public struct NBDWireError: RawRepresentable, Sendable, Hashable, CustomStringConvertible {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// `NBD_EPERM` (1): write-type command on a read-only export.
    public static let permissionDenied = NBDWireError(rawValue: 1)
    /// `NBD_EIO` (5).
    public static let ioError = NBDWireError(rawValue: 5)
    /// `NBD_ENOMEM` (12): the spec says a server SHOULD NOT return it if at all possible.
    public static let outOfMemory = NBDWireError(rawValue: 12)
    /// `NBD_EINVAL` (22).
    public static let invalid = NBDWireError(rawValue: 22)
    /// `NBD_ENOSPC` (28): also for writes past the end of the export.
    public static let noSpace = NBDWireError(rawValue: 28)
    /// `NBD_EOVERFLOW` (75).
    public static let overflow = NBDWireError(rawValue: 75)
    /// `NBD_ENOTSUP` (95): only for WRITE_ZEROES with FAST_ZERO.
    public static let notSupported = NBDWireError(rawValue: 95)
    /// `NBD_ESHUTDOWN` (108): the server is shutting down.
    public static let shutdown = NBDWireError(rawValue: 108)

    public var description: String {
        switch self {
        case .permissionDenied: "EPERM"
        case .ioError: "EIO"
        case .outOfMemory: "ENOMEM"
        case .invalid: "EINVAL"
        case .noSpace: "ENOSPC"
        case .overflow: "EOVERFLOW"
        case .notSupported: "ENOTSUP"
        case .shutdown: "ESHUTDOWN"
        default: "error(\(rawValue))"
        }
    }
}
