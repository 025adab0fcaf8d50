import CairnEngine
import MirrorProtocol

/// An error of the replication layer as the management API reports it: a stable code and a sentence a
/// person can act on. Typed errors from the target keep their code (`target_<code>`), so a script can
/// tell a size mismatch from a full target.
public struct ReplicationError: Error, Sendable, CustomStringConvertible {
    public struct Code: RawRepresentable, Hashable, Sendable {
        public let rawValue: String
        public init(rawValue: String) { self.rawValue = rawValue }
        public static let notFound = Code(rawValue: "not_found")
        public static let invalidArgument = Code(rawValue: "invalid_argument")
        public static let alreadyExists = Code(rawValue: "already_exists")
        public static let busy = Code(rawValue: "busy")
        public static let unreachable = Code(rawValue: "target_unreachable")
        public static let diverged = Code(rawValue: "diverged")
        public static let notConfigured = Code(rawValue: "not_configured")
        public static let corrupt = Code(rawValue: "corrupt")
        public static let wrongState = Code(rawValue: "wrong_state")
        public static let ioFailure = Code(rawValue: "io_failure")
        /// Hosts wrote the target on its own: re-establish needs a choice.
        public static let targetChanged = Code(rawValue: "target_changed")
    }

    public var code: Code
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }

    /// A typed refusal of the target, with the target's sentence and a hint of what to do.
    static func remote(_ error: MirrorRemoteError, target: String) -> ReplicationError {
        let hint: String
        switch error.code {
        case .sizeMismatch: hint = " Resize one of the volumes, or name another target volume."
        case .noSpace: hint = " Free space on the target's pool, or choose another target."
        case .unknownVolume: hint = " Create it on the target first."
        case .volumeInUse: hint = " Disconnect the hosts using it on the target, or name another volume."
        case .diverged:
            hint = " Re-establish with --discard-target-changes to overwrite the target's changes with the primary's data."
        case .targetChanged:
            hint = " Re-establish with --take-target-changes or --discard-target-changes."
        case .authenticationFailed: hint = " Both daemons must use the same --replication-secret-file."
        default: hint = ""
        }
        let code: Code = error.code == .diverged ? .diverged : Code(rawValue: "target_\(error.code)")
        return ReplicationError(code, "target \(target) refused: \(error.message).\(hint)")
    }

    /// Engine errors keep their codes.
    static func engine(_ error: EngineError) -> ReplicationError {
        ReplicationError(Code(rawValue: error.code.rawValue), error.message)
    }
}
