import NIOCore

/// Splits the server's inbound byte stream into client messages: client flags, options, then requests.
///
/// A pure value: it owns its cumulation buffer and knows which protocol phase it is in, but performs no
/// I/O. Feed bytes with `append(_:)`, pull messages with `next()` until it returns nil, and switch the
/// phase with `enterTransmission(extendedHeaders:)` once the handshake has chosen an export.
public struct NBDFrameParser: Sendable {
    /// Which kind of frame comes next.
    public enum Phase: Sendable, Hashable {
        /// The 32-bit client flags that follow the greeting.
        case clientFlags
        /// `IHAVEOPT` option frames.
        case options
        /// Request frames, compact (28 bytes) or extended (32 bytes).
        case transmission(extendedHeaders: Bool)
        /// Nothing more may arrive (after ABORT, DISC or a STARTTLS that hands the socket over).
        case closed
    }

    /// Sizes of fixed frame parts, from proto.md's message layouts.
    enum FrameSize {
        static let clientFlags = 4
        /// magic64 + option32 + length32.
        static let optionHeader = 16
        /// magic32 + flags16 + type16 + cookie64 + offset64 + length32.
        static let compactRequest = 28
        /// magic32 + flags16 + type16 + cookie64 + offset64 + length64.
        static let extendedRequest = 32
    }

    public private(set) var phase: Phase = .clientFlags
    var buffer: ByteBuffer?
    /// A request header whose payload is still arriving (buffered) or being thrown away (discarded).
    var pendingRequest: PendingRequest?
    /// True once a payload slice shares `buffer`'s storage: writing into that storage would copy all of it.
    var payloadSliceOutstanding = false

    let maximumPayload: Int
    let maximumDiscardedPayload: Int
    let maximumOptionDataLength: Int

    struct PendingRequest: Sendable {
        var request: NBDRequest
        var payloadLength: Int
        /// Bytes of a discarded payload still to drop; nil when the payload is buffered.
        var discardRemaining: UInt64?
    }

    /// - Parameters:
    ///   - maximumPayload: largest payload kept in memory.
    ///   - maximumDiscardedPayload: largest payload skipped (read and dropped) rather than refused.
    ///   - maximumOptionDataLength: largest option data accepted.
    public init(
        maximumPayload: Int = NBDLimits.maximumPayload,
        maximumDiscardedPayload: Int = NBDLimits.maximumDiscardedPayload,
        maximumOptionDataLength: Int = NBDLimits.maximumOptionDataLength
    ) {
        precondition(maximumDiscardedPayload >= maximumPayload, "discard limit below payload limit")
        self.maximumPayload = maximumPayload
        self.maximumDiscardedPayload = maximumDiscardedPayload
        self.maximumOptionDataLength = maximumOptionDataLength
    }

    /// Bytes received but not yet turned into messages.
    public var bufferedBytes: Int { buffer?.readableBytes ?? 0 }

    /// True while part of a message (a header, or a payload still arriving or being skipped) is held.
    public var holdsPartialMessage: Bool { bufferedBytes > 0 || pendingRequest != nil }

    /// Adds received bytes. An empty cumulation buffer adopts `bytes` without copying.
    public mutating func append(_ bytes: ByteBuffer) {
        guard bytes.readableBytes > 0 else { return }
        guard var owned = takeOwnedBuffer(reserving: bytes.readableBytes) else {
            buffer = bytes
            payloadSliceOutstanding = false
            return
        }
        owned.writeImmutableBuffer(bytes)
        buffer = owned
    }

    /// Switches to request frames after NBD_OPT_GO's ACK or NBD_OPT_EXPORT_NAME's reply.
    public mutating func enterTransmission(extendedHeaders: Bool) {
        phase = .transmission(extendedHeaders: extendedHeaders)
    }

    /// Stops parsing: any later byte is a protocol violation.
    public mutating func close() {
        phase = .closed
    }

    /// The next complete message, or nil if more bytes are needed.
    public mutating func next() throws(NBDProtocolError) -> NBDClientMessage? {
        switch phase {
        case .clientFlags:
            guard var bytes = buffer, let raw = bytes.readInteger(as: UInt32.self) else { return nil }
            buffer = bytes
            phase = .options
            return .clientFlags(NBDClientFlags(rawValue: raw))
        case .options:
            return try nextOption().map { .option($0) }
        case .transmission(let extended):
            return try nextRequest(extendedHeaders: extended).map { .request($0) }
        case .closed:
            if bufferedBytes > 0 {
                throw NBDProtocolError(.unexpectedData, "\(bufferedBytes) bytes after the session ended")
            }
            return nil
        }
    }

    /// Takes `buffer` out of `self`, uniquely owned and with room for `extra` more bytes, or nil if it holds
    /// nothing unread.
    ///
    /// Two costs are avoided here. A payload slice handed out earlier shares the storage, so writing into it
    /// would copy every byte ever received into it: copy only the unread tail instead. And consumed bytes are
    /// dropped once they outweigh the unread ones, so the buffer does not grow without bound on a busy
    /// connection (moving at most as many bytes as were consumed keeps this amortized O(1) per byte).
    mutating func takeOwnedBuffer(reserving extra: Int) -> ByteBuffer? {
        guard var owned = buffer.take(), owned.readableBytes > 0 else { return nil }
        if payloadSliceOutstanding {
            var fresh = ByteBufferAllocator().buffer(capacity: owned.readableBytes + extra)
            fresh.writeImmutableBuffer(owned)
            payloadSliceOutstanding = false
            return fresh
        }
        if owned.readerIndex > 0, owned.readerIndex >= owned.readableBytes {
            owned.discardReadBytes()
        }
        owned.reserveCapacity(minimumWritableBytes: extra)
        return owned
    }
}
