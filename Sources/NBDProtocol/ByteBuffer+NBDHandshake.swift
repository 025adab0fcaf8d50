import NIOCore

extension ByteBuffer {
    /// Size of the reserved zeroes after the NBD_OPT_EXPORT_NAME reply (proto.md "Newstyle negotiation").
    static let nbdExportNameZeroPadding = 124

    /// Writes the newstyle greeting: `NBDMAGIC`, `IHAVEOPT`, handshake flags.
    @discardableResult
    public mutating func writeNBDGreeting(flags: NBDHandshakeFlags) -> Int {
        writeInteger(NBDMagic.initPassword) + writeInteger(NBDMagic.option) + writeInteger(flags.rawValue)
    }

    /// Writes the reply to NBD_OPT_EXPORT_NAME: size, transmission flags, and 124 zero bytes unless the
    /// client negotiated `NBD_FLAG_C_NO_ZEROES`.
    @discardableResult
    public mutating func writeNBDExportNameReply(size: UInt64, flags: NBDTransmissionFlags, noZeroes: Bool) -> Int {
        var written = writeInteger(size) + writeInteger(flags.rawValue)
        if !noZeroes {
            written += writeRepeatingByte(0, count: Self.nbdExportNameZeroPadding)
        }
        return written
    }

    /// Writes one option reply: magic, option, reply type, length, data.
    @discardableResult
    public mutating func writeNBDOptionReply(_ reply: NBDOptionReply, option: NBDOptionCode) -> Int {
        var written = writeInteger(NBDMagic.optionReply) + writeInteger(option.rawValue)
        written += writeInteger(reply.type.rawValue)
        let lengthIndex = writerIndex
        written += writeInteger(UInt32(0))
        let dataStart = writerIndex
        switch reply {
        case .ack:
            break
        case .server(let name, let description):
            writeInteger(UInt32(name.utf8.count))
            writeString(name)
            if let description { writeString(description) }
        case .info(let info):
            writeNBDInfo(info)
        case .metaContext(let id, let name):
            writeInteger(id)
            writeString(name)
        case .error(_, let message):
            if let message { writeString(message.truncatedToNBDStringLimit) }
        }
        let dataLength = writerIndex - dataStart
        setInteger(UInt32(dataLength), at: lengthIndex)
        return written + dataLength
    }

    private mutating func writeNBDInfo(_ info: NBDInfo) {
        switch info {
        case .export(let size, let flags):
            writeInteger(NBDInfoType.export.rawValue)
            writeInteger(size)
            writeInteger(flags.rawValue)
        case .name(let name):
            writeInteger(NBDInfoType.name.rawValue)
            writeString(name)
        case .description(let text):
            writeInteger(NBDInfoType.description.rawValue)
            writeString(text)
        case .blockSize(let sizes):
            writeInteger(NBDInfoType.blockSize.rawValue)
            writeInteger(sizes.minimum)
            writeInteger(sizes.preferred)
            writeInteger(sizes.maximumPayload)
        }
    }
}

extension String {
    /// The longest prefix that fits proto.md's 4096-byte string limit without splitting a character.
    var truncatedToNBDStringLimit: String {
        guard utf8.count > NBDLimits.maximumStringLength else { return self }
        var result = ""
        var length = 0
        for character in self {
            let size = character.utf8.count
            if length + size > NBDLimits.maximumStringLength { break }
            result.append(character)
            length += size
        }
        return result
    }
}
