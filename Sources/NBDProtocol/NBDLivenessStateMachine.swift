/// Decides when a connection in the transmission phase has stalled: a client that sent part of a
/// message (a request header, half a WRITE payload) and then nothing for `payloadProgress`, or one that
/// sent nothing at all for `idle` while no request of its own runs. Either holds a connection, and the
/// first one a payload buffer of up to `NBDLimits.maximumPayload`, that nobody uses.
///
/// Pure: the connection handler reports events with the time (monotonic nanoseconds) and arms one
/// timer at the deadline the machine returns; when it fires the machine says whether to close. While a
/// request runs the server owes the client a reply, so no deadline applies.
public struct NBDLivenessStateMachine: Sendable {
    /// The two timeouts; nil disables one.
    public struct Timeouts: Sendable, Hashable {
        /// Nothing received and no request running for this long: close.
        public var idle: Duration?
        /// Part of a message received and no further byte for this long: close.
        public var payloadProgress: Duration?

        /// No idle timeout: the Linux kernel client and qemu keep a quiet connection open for as long as
        /// the device is attached, and closing it fails their next I/O.
        public static let defaultIdle: Duration? = nil
        /// A minute without one byte inside a message: far above a TCP retransmission back-off on a
        /// working link (the Linux RTO caps at 120 s only after many losses; a few seconds is typical),
        /// short enough that a stalled client cannot hold a 32 MiB buffer for long.
        public static let defaultPayloadProgress: Duration? = .seconds(60)

        public init(idle: Duration? = Timeouts.defaultIdle, payloadProgress: Duration? = Timeouts.defaultPayloadProgress) {
            self.idle = idle
            self.payloadProgress = payloadProgress
        }
    }

    /// What the handler does next.
    public enum Action: Sendable, Equatable {
        /// Arm (or keep) the timer for this deadline (monotonic nanoseconds).
        case armTimer(deadline: UInt64)
        /// No deadline now.
        case none
        /// Close the connection; `reason` is for the log.
        case close(reason: String)
    }

    public let timeouts: Timeouts
    /// When the last bytes arrived (or the last request finished).
    private var lastProgress: UInt64
    private var partialMessage = false
    private var requestsRunning = 0

    public init(timeouts: Timeouts, now: UInt64) {
        self.timeouts = timeouts
        self.lastProgress = now
    }

    /// Bytes arrived; `partialMessage`: the parser holds part of a message after consuming them.
    public mutating func bytesReceived(partialMessage: Bool, now: UInt64) -> Action {
        lastProgress = now
        self.partialMessage = partialMessage
        return deadlineAction
    }

    /// The number of requests admitted and not yet replied to changed.
    public mutating func requestsRunningChanged(to count: Int, now: UInt64) -> Action {
        if count == 0 && requestsRunning > 0 { lastProgress = now }
        requestsRunning = count
        return deadlineAction
    }

    /// The timer armed for an earlier deadline fired.
    public mutating func timerFired(now: UInt64) -> Action {
        guard let (deadline, reason) = deadline else { return .none }
        if now >= deadline { return .close(reason: reason) }
        return .armTimer(deadline: deadline)
    }

    private var deadlineAction: Action {
        guard let (deadline, _) = deadline else { return .none }
        return .armTimer(deadline: deadline)
    }

    private var deadline: (UInt64, String)? {
        guard requestsRunning == 0 else { return nil }
        if partialMessage, let limit = timeouts.payloadProgress {
            return (lastProgress &+ Self.nanoseconds(limit), "no progress inside a message for \(limit)")
        }
        if !partialMessage, let limit = timeouts.idle {
            return (lastProgress &+ Self.nanoseconds(limit), "idle for \(limit)")
        }
        return nil
    }

    static func nanoseconds(_ duration: Duration) -> UInt64 {
        let (seconds, attoseconds) = duration.components
        return UInt64(max(0, seconds)) * 1_000_000_000 + UInt64(max(0, attoseconds) / 1_000_000_000)
    }
}
