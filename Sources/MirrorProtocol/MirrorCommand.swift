/// The command field of a mirror frame (the command/message field): what the frame asks the
/// other node to do. A reply carries the command it answers with `MirrorFrameFlags.reply` set.
public struct MirrorCommand: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    // Link set-up: the target speaks first with a challenge; the primary proves it holds the secret.
    /// Target → primary, first frame of a connection: protocol version and a random nonce.
    public static let challenge = MirrorCommand(rawValue: 1)
    /// Primary → target: HMAC-SHA256(secret, nonce) and the primary's node name.
    public static let hello = MirrorCommand(rawValue: 2)

    // Management frames, validated by the target against its own tables.
    /// Pair a target volume with a primary volume (creating it if asked) or resume a pairing.
    public static let establish = MirrorCommand(rawValue: 10)
    /// End mirroring for now (planned fracture): the target volume becomes usable on its own.
    public static let sever = MirrorCommand(rawValue: 11)
    /// Grow or shrink the target volume with its primary.
    public static let resize = MirrorCommand(rawValue: 12)
    /// Set the largest data payload the primary will send.
    public static let setFrameSize = MirrorCommand(rawValue: 13)
    /// The target's volumes and their replication state.
    public static let status = MirrorCommand(rawValue: 14)
    /// Forget the pairing on the target (the volume stays).
    public static let remove = MirrorCommand(rawValue: 15)
    /// The target records that a resync completed: both sides are equal at a generation.
    public static let synchronized = MirrorCommand(rawValue: 16)

    // Data frames.
    /// Data at an offset of the paired volume.
    public static let write = MirrorCommand(rawValue: 20)
    /// Zeros at an offset, space kept allocated.
    public static let writeZeroes = MirrorCommand(rawValue: 21)
    /// Zeros at an offset, space released.
    public static let trim = MirrorCommand(rawValue: 22)
    /// Make every acknowledged frame durable on the target.
    public static let flush = MirrorCommand(rawValue: 23)
    /// Online verify (DRBD's verify-alg): the SHA-256 of a range of the paired volume (holes read as zeros).
    public static let checksum = MirrorCommand(rawValue: 24)

    // Taking the target's changes (failover back): the primary reads from the target.
    /// The target's change map: the extents hosts wrote on the target while it was severed or promoted.
    public static let targetChanges = MirrorCommand(rawValue: 30)
    /// The bytes of a range of the paired volume (at most the largest frame), for the primary to copy back.
    public static let read = MirrorCommand(rawValue: 31)

    public var description: String {
        switch self {
        case .challenge: "challenge"
        case .hello: "hello"
        case .establish: "establish"
        case .sever: "sever"
        case .resize: "resize"
        case .setFrameSize: "set-frame-size"
        case .status: "status"
        case .remove: "remove"
        case .synchronized: "synchronized"
        case .write: "write"
        case .writeZeroes: "write-zeroes"
        case .trim: "trim"
        case .flush: "flush"
        case .checksum: "checksum"
        case .targetChanges: "target-changes"
        case .read: "read"
        default: "command-\(rawValue)"
        }
    }
}

/// Frame flags.
public struct MirrorFrameFlags: OptionSet, Hashable, Sendable {
    public let rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    /// The frame answers the request with the same message id.
    public static let reply = MirrorFrameFlags(rawValue: 1 << 0)
    /// A reply reporting failure: the payload is a `MirrorRemoteError`.
    public static let error = MirrorFrameFlags(rawValue: 1 << 1)
    /// Write frames: durable on the target before the reply (the host's FUA).
    public static let fua = MirrorFrameFlags(rawValue: 1 << 2)
    /// Write-zeroes frames: the space may be released (NBD WRITE_ZEROES without NO_HOLE).
    public static let punch = MirrorFrameFlags(rawValue: 1 << 3)
}
