import NIOCore

extension NBDOptionReply {
    /// Decodes an option reply's data (proto.md "Option reply types"), the inverse of
    /// `ByteBuffer.writeNBDOptionReply(_:option:)`.
    ///
    /// - Returns: nil for an NBD_REP_INFO of a type this side does not know, which the client "MUST
    ///   ignore".
    /// - Throws: for a reply type that is neither known nor an error, or data that does not fit its type.
    public static func decoded(type: NBDOptionReplyType, data: ByteBuffer) throws(NBDProtocolError) -> NBDOptionReply? {
        var data = data
        if type.isError {
            let message = data.readableBytes > 0 ? String(decoding: data.readableBytesView, as: UTF8.self) : nil
            return .error(type, message: message)
        }
        switch type {
        case .ack:
            guard data.readableBytes == 0 else { throw malformed("ACK with data") }
            return .ack
        case .server:
            guard let length = data.readInteger(as: UInt32.self), let name = data.readString(length: Int(length))
            else { throw malformed("SERVER reply name does not fit") }
            return .server(
                name: name, description: data.readableBytes > 0 ? data.readString(length: data.readableBytes) : nil)
        case .metaContext:
            guard let id = data.readInteger(as: UInt32.self), let name = data.readString(length: data.readableBytes)
            else { throw malformed("META_CONTEXT reply shorter than 4 bytes") }
            return .metaContext(id: id, name: name)
        case .info:
            return try decodedInfo(&data).map { .info($0) }
        default:
            throw malformed("unknown option reply type \(type)")
        }
    }

    /// NBD_REP_INFO: a 16-bit information type, then a payload whose length the type fixes.
    private static func decodedInfo(_ data: inout ByteBuffer) throws(NBDProtocolError) -> NBDInfo? {
        guard let type = data.readInteger(as: UInt16.self).map(NBDInfoType.init(rawValue:)) else {
            throw malformed("INFO reply shorter than 2 bytes")
        }
        switch type {
        case .export:
            guard data.readableBytes == 10 else { throw malformed("NBD_INFO_EXPORT is not 12 bytes") }
            let size = data.readInteger(as: UInt64.self)!
            return .export(size: size, flags: NBDTransmissionFlags(rawValue: data.readInteger(as: UInt16.self)!))
        case .name:
            return .name(data.readString(length: data.readableBytes) ?? "")
        case .description:
            return .description(data.readString(length: data.readableBytes) ?? "")
        case .blockSize:
            guard data.readableBytes == 12 else { throw malformed("NBD_INFO_BLOCK_SIZE is not 14 bytes") }
            return .blockSize(
                NBDBlockSizeConstraints(
                    minimum: data.readInteger(as: UInt32.self)!,
                    preferred: data.readInteger(as: UInt32.self)!,
                    maximumPayload: data.readInteger(as: UInt32.self)!
                ))
        default:
            return nil
        }
    }

    private static func malformed(_ reason: String) -> NBDProtocolError {
        NBDProtocolError(.malformedReply, reason)
    }
}
