import NIOCore

/// One PDU (RFC 7143 §11.2): the 48-byte Basic Header Segment, any Additional Header Segments, and the
/// data segment (unpadded). Fields are read and written in place in the header, at the offsets the RFC
/// gives for each opcode; named accessors cover the ones this target uses.
public struct ISCSIPDU: Sendable, Equatable {
    /// Exactly `ISCSILimits.basicHeaderLength` bytes.
    public var header: ByteBuffer
    /// Additional Header Segments, a multiple of 4 bytes (often empty).
    public var additionalHeader: ByteBuffer
    /// The data segment without its padding; its length is written into the header on encoding.
    public var data: ByteBuffer

    /// A PDU with a zeroed header carrying `opcode`.
    public init(opcode: ISCSIOpcode, data: ByteBuffer = ByteBuffer()) {
        var header = ByteBuffer()
        header.writeRepeatingByte(0, count: ISCSILimits.basicHeaderLength)
        header.setInteger(opcode.rawValue, at: 0)
        self.header = header
        self.additionalHeader = ByteBuffer()
        self.data = data
    }

    /// A PDU from received parts (the decoder).
    public init(header: ByteBuffer, additionalHeader: ByteBuffer, data: ByteBuffer) {
        self.header = header
        self.additionalHeader = additionalHeader
        self.data = data
    }

    // MARK: Raw field access (offsets from the start of the BHS).

    public func byte(_ offset: Int) -> UInt8 { header.getInteger(at: header.readerIndex + offset)! }
    public mutating func setByte(_ value: UInt8, _ offset: Int) { header.setInteger(value, at: header.readerIndex + offset) }
    public func uint16(_ offset: Int) -> UInt16 { header.getInteger(at: header.readerIndex + offset)! }
    public mutating func setUInt16(_ value: UInt16, _ offset: Int) {
        header.setInteger(value, at: header.readerIndex + offset)
    }
    public func uint32(_ offset: Int) -> UInt32 { header.getInteger(at: header.readerIndex + offset)! }
    public mutating func setUInt32(_ value: UInt32, _ offset: Int) {
        header.setInteger(value, at: header.readerIndex + offset)
    }
    public func uint64(_ offset: Int) -> UInt64 { header.getInteger(at: header.readerIndex + offset)! }
    public mutating func setUInt64(_ value: UInt64, _ offset: Int) {
        header.setInteger(value, at: header.readerIndex + offset)
    }

    // MARK: Fields every PDU has.

    /// The opcode, or nil for one this implementation does not know.
    public var opcode: ISCSIOpcode? { ISCSIOpcode(rawValue: rawOpcode) }
    public var rawOpcode: UInt8 { byte(0) & 0x3F }
    /// The I bit: an immediate command (RFC 7143 §11.2.1.1), outside CmdSN ordering.
    public var isImmediate: Bool {
        get { byte(0) & 0x40 != 0 }
        set { setByte(newValue ? byte(0) | 0x40 : byte(0) & ~0x40, 0) }
    }
    /// Byte 1: the F bit and the opcode-specific flags.
    public var flags: UInt8 {
        get { byte(1) }
        set { setByte(newValue, 1) }
    }
    /// The F (final) bit, bit 7 of byte 1.
    public var isFinal: Bool { flags & 0x80 != 0 }
    /// TotalAHSLength in bytes (the field counts 4-byte words).
    public var additionalHeaderLength: Int { Int(byte(4)) * 4 }
    /// DataSegmentLength as the header says (24 bits).
    public var dataSegmentLength: UInt32 { UInt32(byte(5)) << 16 | UInt32(uint16(6)) }
    /// LUN or opcode-specific bytes 8..15.
    public var logicalUnit: UInt64 {
        get { uint64(8) }
        set { setUInt64(newValue, 8) }
    }
    /// Initiator Task Tag.
    public var initiatorTaskTag: UInt32 {
        get { uint32(16) }
        set { setUInt32(newValue, 16) }
    }

    // MARK: Fields of initiator requests.

    /// CmdSN of a request (SCSI command, NOP-Out, task management, login, text, logout).
    public var commandSequenceNumber: UInt32 { uint32(24) }
    /// ExpStatSN of a request.
    public var expectedStatusSequenceNumber: UInt32 { uint32(28) }
    /// Target Transfer Tag of a Data-Out, NOP-Out or Text request.
    public var targetTransferTag: UInt32 { uint32(20) }

    // MARK: Sequence numbers of target responses (StatSN, ExpCmdSN, MaxCmdSN at 24, 28, 32).

    public mutating func setSequence(statSN: UInt32, expCmdSN: UInt32, maxCmdSN: UInt32) {
        setUInt32(statSN, 24)
        setUInt32(expCmdSN, 28)
        setUInt32(maxCmdSN, 32)
    }

    /// Padding bytes after a data segment of `length` bytes (RFC 7143 §11.2: segments end on 4 bytes).
    public static func padding(_ length: Int) -> Int { (4 - length % 4) % 4 }

    /// Appends the PDU as it goes on the wire: header (with DataSegmentLength and TotalAHSLength filled
    /// in), AHS, header digest, data, padding, data digest.
    public func encode(into out: inout ByteBuffer, headerDigest: Bool, dataDigest: Bool) {
        var header = self.header
        let length = UInt32(data.readableBytes)
        precondition(length <= ISCSILimits.maximumDataSegmentLength, "data segment over 24 bits")
        header.setInteger(UInt8(additionalHeader.readableBytes / 4), at: header.readerIndex + 4)
        header.setInteger(UInt8(length >> 16), at: header.readerIndex + 5)
        header.setInteger(UInt16(truncatingIfNeeded: length), at: header.readerIndex + 6)
        let start = out.writerIndex
        out.writeImmutableBuffer(header)
        out.writeImmutableBuffer(additionalHeader)
        if headerDigest {
            let digest = ISCSIDigest.crc32c(out, at: start, length: out.writerIndex - start)
            out.writeInteger(digest, endianness: .little)
        }
        guard length > 0 else { return }
        out.writeImmutableBuffer(data)
        out.writeRepeatingByte(0, count: Self.padding(Int(length)))
        if dataDigest {
            // The digest covers the padding too (RFC 7143 §11.1).
            var padded = data
            padded.writeRepeatingByte(0, count: Self.padding(Int(length)))
            out.writeInteger(ISCSIDigest.crc32c(padded), endianness: .little)
        }
    }

    /// The encoded PDU in a buffer of its own.
    public func encoded(headerDigest: Bool = false, dataDigest: Bool = false) -> ByteBuffer {
        var out = ByteBuffer()
        encode(into: &out, headerDigest: headerDigest, dataDigest: dataDigest)
        return out
    }
}
