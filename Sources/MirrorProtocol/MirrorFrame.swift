import NIOCore

/// One frame of the mirror protocol (the network-mirroring design, fig. 2): command, message id, payload, checksum.
///
/// On the wire (big-endian, like NBD):
///
/// ```
///  0  magic        UInt32  "CMR1"
///  4  command      UInt16  MirrorCommand
///  6  flags        UInt16  MirrorFrameFlags
///  8  message id   UInt64  chosen by the requester, echoed by the reply
/// 16  length       UInt32  payload bytes
/// 20  header CRC   UInt32  CRC-32C of bytes 0..<20
/// 24  payload      length bytes
///  .  payload CRC  UInt32  CRC-32C of the payload
/// ```
///
/// The header has its own checksum so that a corrupted payload is detected *and* attributed: the
/// receiver trusts the length and message id, skips exactly the damaged frame and asks for it again.
/// A corrupted header cannot be trusted to find the next frame, so it closes the connection (the
/// primary reconnects and retransmits what was not acknowledged).
public struct MirrorFrame: Sendable, Equatable {
    public var command: MirrorCommand
    public var flags: MirrorFrameFlags
    public var messageID: UInt64
    public var payload: ByteBuffer
    /// Bytes sent right after `payload`, as part of it on the wire (length and CRC cover both), without
    /// being copied into it: a write frame's data. The decoder always delivers one contiguous `payload`.
    /// Measured: copying each 1 MiB write into its frame was a third of the primary's memmove on
    /// bench/mirror.py write-1m-qd8.
    public var data: ByteBuffer?

    public init(
        command: MirrorCommand, flags: MirrorFrameFlags = [], messageID: UInt64, payload: ByteBuffer = ByteBuffer(),
        data: ByteBuffer? = nil
    ) {
        self.command = command
        self.flags = flags
        self.messageID = messageID
        self.payload = payload
        self.data = data
    }

    /// Payload bytes on the wire: `payload` and `data`.
    public var payloadLength: Int { payload.readableBytes + (data?.readableBytes ?? 0) }

    /// "CMR1": Cairn Mirror, revision 1.
    public static let magic: UInt32 = 0x434D_5231
    /// Fixed header bytes before the payload.
    public static let headerLength = 24
    /// Trailer bytes after the payload (its CRC).
    public static let trailerLength = 4

    public var isReply: Bool { flags.contains(.reply) }
    public var isError: Bool { flags.contains(.error) }

    /// The successful reply to this frame, carrying `payload`.
    public func reply(_ payload: ByteBuffer = ByteBuffer()) -> MirrorFrame {
        MirrorFrame(command: command, flags: .reply, messageID: messageID, payload: payload)
    }

    /// The error reply to this frame.
    public func errorReply(_ error: MirrorRemoteError) -> MirrorFrame {
        var buffer = ByteBuffer()
        error.encode(into: &buffer)
        return MirrorFrame(command: command, flags: [.reply, .error], messageID: messageID, payload: buffer)
    }

    /// The error a reply carries, or nil for a successful one.
    public func remoteError() -> MirrorRemoteError? {
        guard isError else { return nil }
        var payload = payload
        return (try? MirrorRemoteError.decode(from: &payload))
            ?? MirrorRemoteError(.protocolViolation, "the peer sent an error reply that could not be decoded")
    }
}

extension ByteBuffer {
    /// Appends `frame` with its header, checksums and trailer (one contiguous copy; tests and small frames).
    public mutating func writeMirrorFrame(_ frame: MirrorFrame) {
        writeMirrorFrameHeader(frame)
        var payload = frame.payload
        writeBuffer(&payload)
        if var data = frame.data { writeBuffer(&data) }
        writeInteger(frame.payloadChecksum)
    }

    /// Appends the 24-byte header of `frame` (magic to header CRC), in place (no temporary array: this
    /// runs once per frame).
    public mutating func writeMirrorFrameHeader(_ frame: MirrorFrame) {
        let start = writerIndex
        writeMultipleIntegers(
            MirrorFrame.magic, frame.command.rawValue, frame.flags.rawValue, frame.messageID, UInt32(frame.payloadLength))
        let crc = withUnsafeReadableBytes { raw in
            CRC32C.checksum(UnsafeRawBufferPointer(rebasing: raw[(start - readerIndex)..<(start - readerIndex + 20)]))
        }
        writeInteger(crc)
    }
}

extension MirrorFrame {
    /// CRC-32C of the payload (the frame's trailer).
    public var payloadChecksum: UInt32 {
        let crc = payload.withUnsafeReadableBytes { CRC32C.checksum($0) }
        guard let data else { return crc }
        return data.withUnsafeReadableBytes { CRC32C.checksum($0, continuing: crc) }
    }
}
