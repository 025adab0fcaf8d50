import NBDProtocol
import NIOCore

/// One request on its way through the pipeline to `NBDClientHandler`, which gives it a cookie, writes
/// it, and completes `reply` when the last chunk of the answer arrives.
struct NBDClientCommand: Sendable {
    var type: NBDCommandType
    var flags: NBDCommandFlags = []
    var offset: UInt64 = 0
    /// The header's *length*: effect length, or payload length for WRITE and COPY_AND_WRITE.
    var length: UInt64 = 0
    /// Bytes after the header, written as they are (never copied into the header buffer).
    var payload: [ByteBuffer] = []
    /// nil for NBD_CMD_DISC, the one request without a reply.
    var reply: EventLoopPromise<NBDClientReply>?
}

/// A complete, successful reply.
enum NBDClientReply: Sendable {
    /// Success without data.
    case done
    /// READ: exactly the bytes asked for, holes filled with zeroes.
    case data(ByteBuffer)
    /// BLOCK_STATUS: descriptors by context id.
    case extents([UInt32: [NBDBlockDescriptor]])
}

/// The answer to one request while its chunks arrive (proto.md "Structured reply chunk message"): content
/// chunks must stay inside a READ's range and cover it once the reply is done; status chunks only answer
/// BLOCK_STATUS; the first error chunk decides the outcome.
struct NBDPendingReply {
    let type: NBDCommandType
    let offset: UInt64
    let length: UInt64
    private var data: ByteBuffer?
    private var covered: UInt64 = 0
    private var extents: [UInt32: [NBDBlockDescriptor]] = [:]
    private var error: (NBDWireError, String)?

    init(type: NBDCommandType, offset: UInt64, length: UInt64, allocator: ByteBufferAllocator) {
        self.type = type
        self.offset = offset
        self.length = length
        if type == .read {
            // Zero-filled, so holes need no work and data chunks are copied into place.
            data = allocator.buffer(repeating: 0, count: Int(length))
        }
    }

    /// One chunk's content; throws if it does not belong in this reply.
    mutating func add(_ content: NBDReplyContent) throws(NBDClientError) {
        switch content {
        case .none:
            break
        case .data(let chunkOffset, let bytes):
            try place(chunkOffset, UInt64(bytes.readableBytes))
            data!.setBuffer(bytes, at: Int(chunkOffset - offset))
        case .hole(let chunkOffset, let holeLength):
            try place(chunkOffset, UInt64(holeLength))
        case .blockStatus(let contextID, let descriptors):
            guard type == .blockStatus, extents[contextID] == nil else {
                throw .protocolViolation("unexpected block status chunk for context \(contextID) in a \(type) reply")
            }
            extents[contextID] = descriptors
        case .error(let wireError, let message, _):
            if error == nil { error = (wireError, message) }
        }
    }

    /// A content chunk of `count` bytes at `chunkOffset`: inside the request, after no error.
    private mutating func place(_ chunkOffset: UInt64, _ count: UInt64) throws(NBDClientError) {
        guard type == .read, chunkOffset >= offset, chunkOffset - offset + count <= length else {
            throw .protocolViolation("content chunk [\(chunkOffset), +\(count)) outside the \(type) request")
        }
        // proto.md forbids overlapping chunks, so the sum says whether the range is covered.
        covered += count
    }

    /// The outcome once the final chunk (or a simple reply) has arrived.
    func result() throws(NBDClientError) -> NBDClientReply {
        if let (wireError, message) = error { throw .commandFailed(type, wireError, message: message) }
        switch type {
        case .read:
            // "When no error is detected, the server MUST send enough data chunks to cover the entire region".
            guard covered == length else { throw .protocolViolation("READ reply covers \(covered) of \(length) bytes") }
            return .data(data!)
        case .blockStatus:
            guard !extents.isEmpty else { throw .protocolViolation("BLOCK_STATUS reply without status chunks") }
            return .extents(extents)
        default:
            return .done
        }
    }
}
