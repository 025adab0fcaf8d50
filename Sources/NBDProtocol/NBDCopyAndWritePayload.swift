import NIOCore

/// The payload of NBD_CMD_CAIRN_COPY_AND_WRITE: COPY_AND_WRITE's arguments after the request
/// header, whose *offset* is the target location and whose *length* is this payload's length.
///
/// ```
/// 64 bits  source offset   (copy_src_offset: the chunk to copy)
/// 32 bits  copy size       (copy_size: the copy-on-write chunk size)
/// 32 bits  buffer offset   (write_buf.sub_reg_offset: where the buffer goes inside the chunk)
/// N bytes  buffer          (write_buf.addr; N = length - 16 is write_buf.size)
/// ```
public struct NBDCopyAndWritePayload: Sendable {
    public var sourceOffset: UInt64
    public var copySize: UInt32
    public var bufferOffset: UInt32
    /// The write that made the copy necessary (a slice of the receive buffer when decoded).
    public var buffer: ByteBuffer

    public init(sourceOffset: UInt64, copySize: UInt32, bufferOffset: UInt32, buffer: ByteBuffer) {
        self.sourceOffset = sourceOffset
        self.copySize = copySize
        self.bufferOffset = bufferOffset
        self.buffer = buffer
    }

    /// Decodes a received payload; nil if it is shorter than the fixed 16 bytes. The buffer is not copied.
    public init?(decoding payload: ByteBuffer) {
        var payload = payload
        guard let source = payload.readInteger(as: UInt64.self),
            let copySize = payload.readInteger(as: UInt32.self),
            let bufferOffset = payload.readInteger(as: UInt32.self)
        else { return nil }
        self.init(sourceOffset: source, copySize: copySize, bufferOffset: bufferOffset, buffer: payload)
    }

    /// The request's *length*: the fixed fields plus the buffer.
    public var encodedLength: Int { NBDCopyOnWrite.payloadHeaderLength + buffer.readableBytes }

    /// Bytes of the buffer (COPY_AND_WRITE's write_buf.size).
    public var bufferLength: Int { buffer.readableBytes }
}

extension ByteBuffer {
    /// Writes the fixed 16 bytes of a COPY_AND_WRITE payload; the buffer follows as its own ByteBuffer so
    /// a large write is never copied into the header.
    @discardableResult
    public mutating func writeNBDCopyAndWritePayloadHeader(_ payload: NBDCopyAndWritePayload) -> Int {
        writeInteger(payload.sourceOffset) + writeInteger(payload.copySize) + writeInteger(payload.bufferOffset)
    }
}
