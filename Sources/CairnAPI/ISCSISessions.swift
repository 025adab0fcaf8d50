/// One logged-in iSCSI session (a connection: MaxConnections is 1), as `GET /v1/pool` and the status
/// page show it next to the NBD connection count.
public struct ISCSISessionDTO: Codable, Sendable, Hashable {
    /// The daemon's number for the connection.
    public var id: UInt64
    /// "host:port" of the initiator.
    public var remoteAddress: String
    /// The initiator's iSCSI name (InitiatorName).
    public var initiator: String
    /// The CHAP name it authenticated as; nil without CHAP.
    public var chapName: String?
    /// The target it logged in to; nil for a discovery session.
    public var target: String?

    public init(id: UInt64, remoteAddress: String, initiator: String, chapName: String?, target: String?) {
        self.id = id
        self.remoteAddress = remoteAddress
        self.initiator = initiator
        self.chapName = chapName
        self.target = target
    }
}
