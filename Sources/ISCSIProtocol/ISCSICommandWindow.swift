/// Session sequencing on the target side (RFC 7143 §4.2.2): which CmdSN comes next, how far ahead the
/// initiator may send (MaxCmdSN), and the StatSN each response takes. One connection per session, so
/// commands arrive in CmdSN order and a gap can only be an initiator error.
public struct ISCSICommandWindow: Sendable, Equatable {
    /// The CmdSN the next non-immediate command must carry.
    public private(set) var expCmdSN: UInt32
    /// The StatSN the next status-carrying response takes.
    public private(set) var nextStatSN: UInt32
    /// Commands admitted and not yet answered; the window shrinks by them.
    public private(set) var outstanding: UInt32 = 0

    public init(expCmdSN: UInt32, statSN: UInt32) {
        self.expCmdSN = expCmdSN
        self.nextStatSN = statSN
    }

    /// MaxCmdSN: the highest CmdSN the initiator may send now (RFC 7143 §4.2.2.1).
    public var maxCmdSN: UInt32 {
        expCmdSN &+ (ISCSILimits.commandWindow &- min(outstanding, ISCSILimits.commandWindow)) &- 1
    }

    public enum Admission: Sendable, Equatable {
        /// Run the command.
        case accept
        /// Drop it silently (RFC 7143 §3.2.2.1: a CmdSN outside the window, or already seen).
        case ignore
    }

    /// A command arrived. Immediate commands run without taking a CmdSN; others must be the next one.
    public mutating func admit(cmdSN: UInt32, immediate: Bool) -> Admission {
        if immediate { return .accept }
        guard cmdSN == expCmdSN else { return .ignore }
        expCmdSN &+= 1
        outstanding += 1
        return .accept
    }

    /// A non-immediate command admitted by `admit` has been answered: its slot in the window reopens.
    public mutating func finish() {
        if outstanding > 0 { outstanding -= 1 }
    }

    /// Takes the StatSN for a response that carries status.
    public mutating func takeStatSN() -> UInt32 {
        defer { nextStatSN &+= 1 }
        return nextStatSN
    }

    /// RFC 1982 serial number comparison on 32 bits (RFC 7143 §4.2.2): `a` is after `b`.
    public static func isAfter(_ a: UInt32, _ b: UInt32) -> Bool {
        a != b && (a &- b) < (1 << 31)
    }
}
