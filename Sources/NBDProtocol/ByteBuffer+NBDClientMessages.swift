import NIOCore

/// Encoders for what a client sends: the mirror images of `NBDFrameParser`, so that anything written here
/// parses back to the same value there.
extension ByteBuffer {
    /// The 32-bit client flags that answer the greeting.
    @discardableResult
    public mutating func writeNBDClientFlags(_ flags: NBDClientFlags) -> Int {
        writeInteger(flags.rawValue)
    }

    /// One option frame: `IHAVEOPT`, option code, data length, data (proto.md "Fixed newstyle negotiation").
    /// `.unknown` is sent with no data; `.malformed` cannot be encoded.
    @discardableResult
    public mutating func writeNBDOption(_ option: NBDOption) -> Int {
        let start = writerIndex
        writeInteger(NBDMagic.option)
        writeInteger(option.code.rawValue)
        let lengthIndex = writerIndex
        writeInteger(UInt32(0))
        let dataStart = writerIndex
        switch option {
        case .exportName(let name):
            writeString(name)
        case .abort, .list, .startTLS, .structuredReply, .extendedHeaders, .unknown:
            break
        case .info(let request), .go(let request):
            writeInteger(UInt32(request.exportName.utf8.count))
            writeString(request.exportName)
            writeInteger(UInt16(request.requests.count))
            for item in request.requests { writeInteger(item.rawValue) }
        case .listMetaContext(let request), .setMetaContext(let request):
            writeInteger(UInt32(request.exportName.utf8.count))
            writeString(request.exportName)
            writeInteger(UInt32(request.queries.count))
            for query in request.queries {
                writeInteger(UInt32(query.utf8.count))
                writeString(query)
            }
        case .malformed(let code, let reason):
            preconditionFailure("cannot encode malformed \(code): \(reason)")
        }
        setInteger(UInt32(writerIndex - dataStart), at: lengthIndex)
        return writerIndex - start
    }

    /// A request header (proto.md "Request message"), compact (28 bytes) or extended (32 bytes). A WRITE
    /// or COPY_AND_WRITE payload follows separately.
    @discardableResult
    public mutating func writeNBDRequestHeader(
        type: NBDCommandType,
        flags: NBDCommandFlags = [],
        cookie: UInt64,
        offset: UInt64,
        length: UInt64,
        extendedHeaders: Bool = false
    ) -> Int {
        precondition(extendedHeaders || length <= UInt64(UInt32.max), "compact request length over 32 bits")
        var written = writeInteger(extendedHeaders ? NBDMagic.extendedRequest : NBDMagic.request)
        written += writeInteger(flags.rawValue) + writeInteger(type.rawValue) + writeInteger(cookie)
        written += writeInteger(offset)
        written += extendedHeaders ? writeInteger(length) : writeInteger(UInt32(length))
        return written
    }
}
