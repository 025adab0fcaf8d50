/// What a login settled for one session (one connection: MaxConnections=1), and the session's identity.
public struct ISCSISessionParameters: Sendable, Equatable {
    public enum SessionType: String, Sendable {
        case normal = "Normal"
        case discovery = "Discovery"
    }

    public var sessionType: SessionType = .normal
    public var initiatorName: String = ""
    /// The CHAP name (CHAP_N) the initiator proved it holds the secret of; nil without CHAP.
    public var authenticatedName: String?
    /// The target the session logged in to (nil for discovery).
    public var targetName: String?
    /// Initiator Session ID (6 bytes) and the target's handle for the session.
    public var isid: UInt64 = 0
    public var tsih: UInt16 = 0

    public var headerDigest = false
    public var dataDigest = false
    /// Largest data segment this target may send (the initiator's declaration; RFC 7143 §13.12).
    public var initiatorMaxRecvDataSegmentLength: UInt32 = ISCSILimits.defaultDataSegmentLength
    /// Largest data segment this target accepts (its declaration).
    public var targetMaxRecvDataSegmentLength: UInt32 = ISCSILimits.defaultDataSegmentLength
    /// RFC 7143 §13.13, §13.14 (negotiated: the smaller value).
    public var maxBurstLength: UInt32 = 262_144
    public var firstBurstLength: UInt32 = 65_536
    /// RFC 7143 §13.10 (OR): the first burst of a write waits for an R2T.
    public var initialR2T = true
    /// RFC 7143 §13.11 (AND): data may ride in the SCSI command PDU.
    public var immediateData = true
    /// RFC 7143 §13.17 (the smaller value); this target issues at most one R2T per task at a time.
    public var maxOutstandingR2T: UInt32 = 1
    public var defaultTime2Wait: UInt16 = 2
    public var defaultTime2Retain: UInt16 = 0

    /// The first StatSN after login and the CmdSN the first command carries.
    public var statSN: UInt32 = 0
    public var expCmdSN: UInt32 = 0

    public init() {}
}
