import NIOCore

/// What a logical unit says about itself: geometry, identity, write protection, thin provisioning. The
/// parameter data of INQUIRY, READ CAPACITY, MODE SENSE and REPORT LUNS is built from it.
public struct SCSIDeviceProfile: Sendable, Equatable {
    /// Logical block size (512: volume sizes are whole sectors).
    public var blockSize: UInt32
    public var blockCount: UInt64
    public var readOnly: Bool
    /// Unit serial number (VPD page 80) and the base of the T10 vendor designator.
    public var serial: String
    /// An NAA locally assigned identifier (type 3, 60 bits), unique per logical unit (VPD page 83).
    public var naaIdentifier: UInt64
    /// log2(physical block / logical block) (READ CAPACITY 16). 0: every 512-byte block is written whole
    /// (the engine completes partial 4 KiB sub-blocks itself). The 4 KiB sub-block shows as the optimal
    /// transfer and unmap granularities of VPD B0 instead: a non-zero exponent makes SBC-4's rule that
    /// GET LBA STATUS starts at the requested LBA contradict libiscsi's GetLBAStatus tests, which assume
    /// a status per physical block.
    public var physicalBlockExponent: UInt8
    /// Unmapping is supported and unmapped blocks read as zeros (LBPME, LBPRZ; VPD B2 LBPU, LBPWS).
    public var thinProvisioned: Bool
    /// Blocks per unmap granule (VPD B0 OPTIMAL UNMAP GRANULARITY).
    public var unmapGranularity: UInt32

    public init(
        blockSize: UInt32 = 512, blockCount: UInt64, readOnly: Bool, serial: String, naaIdentifier: UInt64,
        physicalBlockExponent: UInt8 = 0, thinProvisioned: Bool = true, unmapGranularity: UInt32 = 8
    ) {
        self.blockSize = blockSize
        self.blockCount = blockCount
        self.readOnly = readOnly
        self.serial = serial
        self.naaIdentifier = naaIdentifier
        self.physicalBlockExponent = physicalBlockExponent
        self.thinProvisioned = thinProvisioned
        self.unmapGranularity = unmapGranularity
    }

    /// T10 vendor identification (8 bytes), product (16) and revision (4), space padded (SPC-4 §6.6.2).
    public static let vendor = "CAIRN"
    public static let product = "VOLUME"
    public static let revision = "0001"

    /// READ CAPACITY (10): the last LBA (0xFFFFFFFF when it does not fit: use READ CAPACITY 16) and the
    /// block length.
    public var readCapacity10: ByteBuffer {
        var buffer = ByteBuffer()
        buffer.writeInteger(blockCount - 1 > 0xFFFF_FFFF ? UInt32.max : UInt32(blockCount - 1))
        buffer.writeInteger(blockSize)
        return buffer
    }

    /// READ CAPACITY (16) parameter data (SBC-4 §5.16.2), 32 bytes.
    public var readCapacity16: ByteBuffer {
        var buffer = ByteBuffer()
        buffer.writeInteger(blockCount - 1)
        buffer.writeInteger(blockSize)
        buffer.writeInteger(UInt8(0))  // No protection information.
        buffer.writeInteger(physicalBlockExponent & 0x0F)
        // LBPME (bit 15) and LBPRZ (bit 14): unmapped blocks read as zeros; lowest aligned LBA 0.
        buffer.writeInteger(UInt16(thinProvisioned ? 0xC000 : 0))
        buffer.writeRepeatingByte(0, count: 16)
        return buffer
    }

    /// REPORT LUNS (SPC-4 §6.33): one logical unit, LUN 0, whatever the select report.
    public static func reportLUNs(selectReport: UInt8) throws(SCSISense) -> ByteBuffer {
        // 0: all LUNs; 1: well-known LUNs (none); 2: all; 0x10-0x12 (SPC-5) are refused as unknown.
        guard selectReport <= 2 else { throw .invalidFieldInCDB }
        var buffer = ByteBuffer()
        let count = selectReport == 1 ? 0 : 1
        buffer.writeInteger(UInt32(8 * count))
        buffer.writeInteger(UInt32(0))
        if count == 1 { buffer.writeInteger(UInt64(0)) }
        return buffer
    }

    /// GET LBA STATUS parameter data (SBC-4 §5.7): `extents` are (blocks, mapped) from `lba` on.
    public static func lbaStatus(lba: UInt64, extents: [(blocks: UInt64, mapped: Bool)]) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.writeInteger(UInt32(4 + 16 * extents.count))  // PARAMETER DATA LENGTH: bytes after this field.
        buffer.writeInteger(UInt32(0))
        var position = lba
        for extent in extents {
            buffer.writeInteger(position)
            buffer.writeInteger(UInt32(clamping: extent.blocks))
            buffer.writeInteger(UInt8(extent.mapped ? 0 : 1))  // 0 mapped, 1 deallocated.
            buffer.writeRepeatingByte(0, count: 3)
            position += extent.blocks
        }
        return buffer
    }
}

extension ByteBuffer {
    /// `text` space-padded or cut to exactly `width` bytes (INQUIRY's ASCII fields).
    mutating func writePadded(_ text: String, width: Int) {
        let bytes = Array(text.utf8.prefix(width))
        writeBytes(bytes)
        writeRepeatingByte(UInt8(ascii: " "), count: width - bytes.count)
    }
}
