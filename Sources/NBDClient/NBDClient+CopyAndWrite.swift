import NBDProtocol
import NIOCore

extension NBDClient {
    /// True if the server selected `x-cairn:copy-on-write`, which enables `copyAndWrite` and
    /// `copyOnWriteStatus`.
    public var supportsCopyAndWrite: Bool { session.metaContextID(of: NBDCopyOnWrite.contextName) != nil }

    /// COPY_AND_WRITE (NBD_CMD_CAIRN_COPY_AND_WRITE, docs/NBD-EXTENSIONS.md): the `copySize`
    /// bytes at `target` become a copy of those at `source` with `buffer` written `bufferOffset` bytes in.
    /// Only the buffer crosses the wire; the server copies the chunk itself, and afterwards reports the
    /// target unshared in `x-cairn:copy-on-write`. One round trip.
    ///
    /// - Parameters:
    ///   - source: offset of the chunk to copy (chunk-aligned).
    ///   - target: offset of the chunk to create (chunk-aligned).
    ///   - copySize: the export's copy-on-write chunk size (Cairn: the volume's chunk size).
    ///   - buffer: the write that made the copy necessary.
    ///   - bufferOffset: where the buffer goes inside the chunk.
    ///   - fua: durable when this returns.
    public func copyAndWrite(
        source: UInt64,
        target: UInt64,
        copySize: UInt32,
        buffer: ByteBuffer,
        bufferOffset: UInt32,
        fua: Bool = false
    ) async throws {
        guard supportsCopyAndWrite else {
            throw NBDClientError.notNegotiated("meta context \(NBDCopyOnWrite.contextName)")
        }
        try checkWritable()
        try checkRange(target, UInt64(copySize), payload: false)
        try checkRange(source, UInt64(copySize), payload: false)
        guard buffer.readableBytes > 0, UInt64(bufferOffset) + UInt64(buffer.readableBytes) <= UInt64(copySize) else {
            throw NBDClientError.invalidArgument(
                "the buffer must be nonempty and fit inside the \(copySize)-byte chunk")
        }
        let payload = NBDCopyAndWritePayload(
            sourceOffset: source, copySize: copySize, bufferOffset: bufferOffset, buffer: buffer)
        guard payload.encodedLength <= maximumPayload else {
            throw NBDClientError.invalidArgument("a \(buffer.readableBytes)-byte buffer exceeds the maximum payload")
        }
        var header = channel.allocator.buffer(capacity: NBDCopyOnWrite.payloadHeaderLength)
        header.writeNBDCopyAndWritePayloadHeader(payload)
        let command = NBDClientCommand(
            type: .cairnCopyAndWrite, flags: try fuaFlag(fua), offset: target, length: UInt64(payload.encodedLength),
            payload: [header, buffer])
        _ = try await send(command)
    }

    /// `x-cairn:copy-on-write` status from `offset`: `NBDCopyOnWriteState.shared` where a write would copy.
    public func copyOnWriteStatus(offset: UInt64, length: UInt64) async throws -> [NBDBlockDescriptor] {
        try await blockStatus(context: NBDCopyOnWrite.contextName, offset: offset, length: length)
    }
}
