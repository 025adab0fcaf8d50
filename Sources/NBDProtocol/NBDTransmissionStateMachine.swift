/// Per-connection bookkeeping of the transmission phase: which requests run, how much memory they hold,
/// and when the connection may close. Pure: the connection handler feeds it events and obeys its answers.
public struct NBDTransmissionStateMachine: Sendable {
    /// Flow-control limits. When either is reached the connection stops reading until replies drain.
    public struct Limits: Sendable, Hashable {
        /// Requests admitted and not yet fully replied to. qemu's client keeps at most 16 in flight and
        /// nbdcopy about 38 (measured); 64 leaves headroom without letting one client queue without end.
        public var maximumRequestsInFlight: Int
        /// WRITE payloads plus READ lengths held by admitted requests: four maximum-size payloads.
        public var maximumBytesInFlight: Int

        public init(maximumRequestsInFlight: Int = 64, maximumBytesInFlight: Int = 128 * 1024 * 1024) {
            precondition(maximumRequestsInFlight > 0 && maximumBytesInFlight > 0, "limits must be positive")
            self.maximumRequestsInFlight = maximumRequestsInFlight
            self.maximumBytesInFlight = maximumBytesInFlight
        }
    }

    /// A slot held by an admitted request; give it back with `requestFinished(_:)` once its reply is written.
    public struct Ticket: Sendable, Hashable {
        public let cookie: UInt64
        public let bytes: Int
    }

    /// What to do with a request just parsed.
    public enum RequestAction: Sendable {
        /// Run it against the export.
        case execute(NBDRequest, Ticket)
        /// Reply with this error without touching the export.
        case reject(NBDRequest, NBDRequestRejection, Ticket)
        /// NBD_CMD_DISC: stop reading; close once `requestFinished` says so (or now, if `closeNow`).
        case disconnect(closeNow: Bool)
        /// Nothing (a request after DISC, which "a client MUST NOT send").
        case ignore
    }

    enum State: Sendable, Hashable {
        case active
        /// NBD_CMD_DISC received: "The server MUST handle all outstanding requests ... and close".
        case disconnecting
        /// Server shutdown: running requests finish, new ones get ESHUTDOWN, then the connection closes.
        case shuttingDown
        case closed
    }

    public let session: NBDNegotiatedSession
    public let limits: Limits
    var state: State = .active
    public private(set) var requestsInFlight = 0
    public private(set) var bytesInFlight = 0

    public init(session: NBDNegotiatedSession, limits: Limits = .init()) {
        self.session = session
        self.limits = limits
    }

    /// True while the connection may parse and admit another request.
    public var canAcceptRequest: Bool {
        switch state {
        case .active, .shuttingDown:
            requestsInFlight < limits.maximumRequestsInFlight && bytesInFlight < limits.maximumBytesInFlight
        case .disconnecting, .closed:
            false
        }
    }

    /// Memory a request pins until its reply is written: its WRITE payload, or the data a READ returns.
    static func footprint(of request: NBDRequest) -> Int {
        if request.type == .read { return Int(clamping: request.length) }
        return request.payload.bufferedBytes
    }

    public mutating func requestReceived(_ request: NBDRequest) -> RequestAction {
        switch state {
        case .disconnecting, .closed:
            return .ignore
        case .active, .shuttingDown:
            break
        }
        if request.type == .disconnect {
            state = .disconnecting
            return .disconnect(closeNow: requestsInFlight == 0)
        }
        if state == .shuttingDown {
            // proto.md "Terminating the transmission phase": errors for requests received during shutdown
            // "SHOULD be NBD_ESHUTDOWN".
            return .reject(request, NBDRequestRejection(.shutdown, "server is shutting down"), admit(bytes: 0, request))
        }
        if let rejection = NBDRequestValidator.validate(request, session: session) {
            return .reject(request, rejection, admit(bytes: 0, request))
        }
        return .execute(request, admit(bytes: Self.footprint(of: request), request))
    }

    private mutating func admit(bytes: Int, _ request: NBDRequest) -> Ticket {
        requestsInFlight += 1
        bytesInFlight += bytes
        return Ticket(cookie: request.cookie, bytes: bytes)
    }

    /// A reply has been written (or the connection is gone). Returns true if the connection should now close.
    public mutating func requestFinished(_ ticket: Ticket) -> Bool {
        precondition(requestsInFlight > 0, "finished more requests than were admitted")
        requestsInFlight -= 1
        bytesInFlight -= ticket.bytes
        return shouldCloseWhenIdle
    }

    /// The server is shutting down. Returns true if the connection should close right away.
    public mutating func shutdownRequested() -> Bool {
        if state == .active { state = .shuttingDown }
        return shouldCloseWhenIdle
    }

    /// The connection is closed; later requests are ignored.
    public mutating func connectionClosed() {
        state = .closed
    }

    private var shouldCloseWhenIdle: Bool {
        (state == .disconnecting || state == .shuttingDown) && requestsInFlight == 0
    }
}
