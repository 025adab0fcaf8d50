import Synchronization

/// What a connection has put on and taken off the wire, at the NBD level (TCP/IP headers not included).
/// Take two snapshots and subtract them to measure one operation.
public struct NBDClientStatistics: Sendable, Hashable {
    /// Requests that expect a reply: each is one round trip when nothing else is in flight.
    public var requests = 0
    /// Bytes written to the socket: handshake, request headers and payloads.
    public var bytesSent = 0
    /// Bytes read from the socket: greeting, option replies, replies and their data.
    public var bytesReceived = 0

    public init() {}

    /// What happened between `earlier` and `self`.
    public func since(_ earlier: NBDClientStatistics) -> NBDClientStatistics {
        var delta = NBDClientStatistics()
        delta.requests = requests - earlier.requests
        delta.bytesSent = bytesSent - earlier.bytesSent
        delta.bytesReceived = bytesReceived - earlier.bytesReceived
        return delta
    }
}

/// The counters, updated on the connection's event loop and read from anywhere.
final class NBDClientCounters: Sendable {
    private let state = Mutex(NBDClientStatistics())

    var snapshot: NBDClientStatistics { state.withLock { $0 } }

    func sent(_ bytes: Int, request: Bool = false) {
        state.withLock {
            $0.bytesSent += bytes
            if request { $0.requests += 1 }
        }
    }

    func received(_ bytes: Int) {
        state.withLock { $0.bytesReceived += bytes }
    }
}
