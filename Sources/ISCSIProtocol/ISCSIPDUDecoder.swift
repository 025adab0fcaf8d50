import NIOCore

/// Why a byte stream could not be read as PDUs.
public enum ISCSIDecodeError: Error, Sendable, Equatable {
    /// The header digest did not match: the PDU's boundaries cannot be trusted, so the connection ends
    /// (RFC 7143 §7.8: at ErrorRecoveryLevel 0 a header digest error is a connection failure).
    case headerDigestMismatch
    /// The data segment is longer than this side declared it receives (RFC 7143 §13.12): the
    /// connection ends rather than buffer it.
    case dataSegmentTooLong(length: UInt32, limit: UInt32)
    /// The data digest did not match; the PDU was consumed, its header is here for the Reject
    /// (RFC 7143 §7.8 "Data digest error": reason 0x02).
    case dataDigestMismatch(header: ByteBuffer)
}

/// Cuts a byte stream into PDUs. Pure: feed it the bytes received so far; it consumes whole PDUs only.
/// Digests are switched on once login negotiates them (RFC 7143 §13.1: from the first PDU after the
/// Login Response that ends the login, in both directions).
public struct ISCSIPDUDecoder: Sendable {
    public var headerDigest = false
    public var dataDigest = false
    /// MaxRecvDataSegmentLength this side declared (8192 until negotiated).
    public var maximumDataSegmentLength: UInt32 = ISCSILimits.defaultDataSegmentLength

    public init() {}

    /// The next PDU if `buffer` holds all of it (consumed), nil if more bytes are needed (nothing consumed).
    public mutating func decode(_ buffer: inout ByteBuffer) throws(ISCSIDecodeError) -> ISCSIPDU? {
        let bhs = ISCSILimits.basicHeaderLength
        guard buffer.readableBytes >= bhs else { return nil }
        let start = buffer.readerIndex
        let ahsLength = Int(buffer.getInteger(at: start + 4, as: UInt8.self)!) * 4
        let high = UInt32(buffer.getInteger(at: start + 5, as: UInt8.self)!)
        let dataLength = high << 16 | UInt32(buffer.getInteger(at: start + 6, as: UInt16.self)!)
        if dataLength > maximumDataSegmentLength {
            throw .dataSegmentTooLong(length: dataLength, limit: maximumDataSegmentLength)
        }
        let headerDigestLength = headerDigest ? 4 : 0
        let padded = Int(dataLength) + ISCSIPDU.padding(Int(dataLength))
        let dataDigestLength = dataDigest && dataLength > 0 ? 4 : 0
        let total = bhs + ahsLength + headerDigestLength + padded + dataDigestLength
        guard buffer.readableBytes >= total else { return nil }
        if headerDigest {
            let expected = buffer.getInteger(at: start + bhs + ahsLength, endianness: .little, as: UInt32.self)!
            guard ISCSIDigest.crc32c(buffer, at: start, length: bhs + ahsLength) == expected else {
                throw .headerDigestMismatch
            }
        }
        let header = buffer.getSlice(at: start, length: bhs)!
        let ahs = buffer.getSlice(at: start + bhs, length: ahsLength)!
        let dataStart = start + bhs + ahsLength + headerDigestLength
        let data = buffer.getSlice(at: dataStart, length: Int(dataLength))!
        var dataIntact = true
        if dataDigestLength > 0 {
            let expected = buffer.getInteger(at: dataStart + padded, endianness: .little, as: UInt32.self)!
            dataIntact = ISCSIDigest.crc32c(buffer, at: dataStart, length: padded) == expected
        }
        // The PDU is consumed either way: a data digest error leaves its boundaries intact.
        buffer.moveReaderIndex(forwardBy: total)
        guard dataIntact else { throw .dataDigestMismatch(header: header) }
        return ISCSIPDU(header: header, additionalHeader: ahs, data: data)
    }
}
