import NIOCore

/// The parameter list of EXTENDED COPY (LID1, SPC-4 §6.4): copy target (CSCD) descriptors naming logical
/// units, and segment descriptors saying what to copy between them. This target takes identification
/// descriptors (0xE4, a designator from VPD page 83) and block-to-block segments (0x02); the copy itself
/// is the storage's business (it never passes through the initiator).
public struct SCSIExtendedCopyList: Sendable, Equatable {
    /// A logical unit named by a designator (0xE4 descriptor, bytes 4..27 as in VPD page 83).
    public struct Target: Sendable, Equatable {
        public var codeSet: UInt8
        public var association: UInt8
        public var designatorType: UInt8
        public var designator: [UInt8]
        /// DISK BLOCK LENGTH of the block device type specific parameters.
        public var blockSize: UInt32

        /// The 60-bit identifier of an NAA locally assigned designator (type 3, NAA 3), as this target
        /// builds its own (`SCSIDeviceProfile.naaIdentifier`); nil for any other designator.
        public var naaIdentifier: UInt64? {
            guard designatorType == 3, association == 0, designator.count == 8 else { return nil }
            let value = designator.reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
            guard value >> 60 == 3 else { return nil }
            return value & 0x0FFF_FFFF_FFFF_FFFF
        }
    }

    /// A block-to-block segment (type 0x02): `blocks` logical blocks from `sourceLBA` of target
    /// `source` to `destinationLBA` of target `destination` (indexes into `targets`).
    public struct Segment: Sendable, Equatable {
        public var source: Int
        public var destination: Int
        public var blocks: UInt32
        public var sourceLBA: UInt64
        public var destinationLBA: UInt64

        public init(source: Int, destination: Int, blocks: UInt32, sourceLBA: UInt64, destinationLBA: UInt64) {
            self.source = source
            self.destination = destination
            self.blocks = blocks
            self.sourceLBA = sourceLBA
            self.destinationLBA = destinationLBA
        }
    }

    /// LIST IDENTIFIER and LIST ID USAGE (SPC-4 Table 112): usage 0 or 1 keeps the results for RECEIVE
    /// COPY RESULTS; 2 and 3 do not.
    public var listID: UInt8
    public var listIDUsage: UInt8
    public var targets: [Target]
    public var segments: [Segment]

    /// Whether RECEIVE COPY RESULTS may ask about this copy afterwards.
    public var holdsResults: Bool { listIDUsage < 2 }

    /// Descriptor type codes (SPC-4 Table 113, Table 120).
    public static let identificationTargetDescriptor: UInt8 = 0xE4
    public static let blockToBlockSegment: UInt8 = 0x02
    /// Lengths of the descriptors this target reads: an 0xE0..0xE9 CSCD descriptor is 32 bytes, a
    /// block-to-block segment 28 (SPC-4 §6.4.5, §6.4.6).
    static let targetDescriptorLength = 32
    static let blockToBlockSegmentLength = 28
    static let headerLength = 16

    /// The list in `data`; nil for an empty list (a PARAMETER LIST LENGTH of 0 copies nothing and is not
    /// an error, SPC-4 §6.4.1). Refusals follow SPC-4's order: lengths first, then each descriptor.
    public static func parse(_ data: ByteBuffer) throws(SCSISense) -> SCSIExtendedCopyList? {
        let bytes = Array(data.readableBytesView)
        guard !bytes.isEmpty else { return nil }
        guard bytes.count >= headerLength else { throw .parameterListLengthError }
        func u16(_ i: Int) -> Int { Int(bytes[i]) << 8 | Int(bytes[i + 1]) }
        func u32(_ i: Int) -> UInt32 { UInt32(u16(i)) << 16 | UInt32(u16(i + 2)) }
        func u64(_ i: Int) -> UInt64 { UInt64(u32(i)) << 32 | UInt64(u32(i + 4)) }
        let targetLength = u16(2)
        let segmentLength = Int(u32(8))
        let inlineLength = Int(u32(12))
        guard targetLength + segmentLength <= Int(SCSICopyLimits.maximumDescriptorListLength),
            headerLength + targetLength + segmentLength + inlineLength <= bytes.count
        else { throw .parameterListLengthError }
        // No segment type this target takes refers to inline data (SPC-4 §6.4.7).
        guard inlineLength == 0 else { throw .invalidFieldInParameterList }
        var list = SCSIExtendedCopyList(
            listID: bytes[0], listIDUsage: (bytes[1] >> 3) & 0x03, targets: [], segments: [])
        var at = headerLength
        let targetsEnd = headerLength + targetLength
        while at < targetsEnd {
            guard bytes[at] == identificationTargetDescriptor else { throw .unsupportedTargetDescriptorType }
            guard at + targetDescriptorLength <= targetsEnd else { throw .parameterListLengthError }
            guard list.targets.count < Int(SCSICopyLimits.maximumTargetDescriptors) else {
                throw .tooManyTargetDescriptors
            }
            // Byte 1: LU ID TYPE and NUL are ignored under SPC-4; the device type must be a block device.
            guard bytes[at + 1] & 0x1F == 0 else { throw .unsupportedTargetDescriptorType }
            let length = min(Int(bytes[at + 7]), 20)
            list.targets.append(
                Target(
                    codeSet: bytes[at + 4] & 0x0F, association: (bytes[at + 5] >> 4) & 0x03,
                    designatorType: bytes[at + 5] & 0x0F, designator: Array(bytes[(at + 8)..<(at + 8 + length)]),
                    blockSize: u32(at + 28) & 0x00FF_FFFF))
            at += targetDescriptorLength
        }
        let segmentsEnd = targetsEnd + segmentLength
        while at < segmentsEnd {
            guard bytes[at] == blockToBlockSegment else { throw .unsupportedSegmentDescriptorType }
            guard at + 4 <= segmentsEnd, u16(at + 2) + 4 == blockToBlockSegmentLength,
                at + blockToBlockSegmentLength <= segmentsEnd
            else { throw .parameterListLengthError }
            guard list.segments.count < Int(SCSICopyLimits.maximumSegmentDescriptors) else {
                throw .tooManySegmentDescriptors
            }
            list.segments.append(
                Segment(
                    source: u16(at + 4), destination: u16(at + 6), blocks: UInt32(u16(at + 10)),
                    sourceLBA: u64(at + 12), destinationLBA: u64(at + 20)))
            at += blockToBlockSegmentLength
        }
        return list
    }
}

/// The limits of this copy manager, reported by RECEIVE COPY RESULTS (OPERATING PARAMETERS) and VPD
/// page 8F.
public enum SCSICopyLimits {
    /// qemu and VMware name two logical units per command (source, destination); 8 leaves room for
    /// initiators that list every unit they may copy between.
    public static let maximumTargetDescriptors: UInt16 = 8
    /// Segments per command: qemu and VMware send one; 16 bounds how long one command holds the session.
    public static let maximumSegmentDescriptors: UInt16 = 16
    /// Bytes of descriptors: every target and segment descriptor allowed above fits with room to spare.
    public static let maximumDescriptorListLength: UInt32 = 1024
    /// Bytes one segment may copy: the 16-bit block count of a type 0x02 segment (65535 × 512).
    public static let maximumSegmentLength: UInt32 = 65535 * 512
    /// Descriptor type codes implemented, in the order RECEIVE COPY RESULTS lists them.
    public static let implementedDescriptors: [UInt8] = [
        SCSIExtendedCopyList.blockToBlockSegment, SCSIExtendedCopyList.identificationTargetDescriptor,
    ]
}

/// What RECEIVE COPY RESULTS (COPY STATUS) reports about a finished EXTENDED COPY (SPC-4 §6.18.3).
public struct SCSICopyStatus: Sendable, Equatable {
    /// COPY MANAGER STATUS: 1 completed without errors, 2 completed with errors.
    public var succeeded: Bool
    public var segmentsProcessed: UInt16
    public var bytesCopied: UInt64

    public init(succeeded: Bool, segmentsProcessed: UInt16, bytesCopied: UInt64) {
        self.succeeded = succeeded
        self.segmentsProcessed = segmentsProcessed
        self.bytesCopied = bytesCopied
    }

    /// COPY STATUS parameter data, 12 bytes; the transfer count in bytes, or KiB when bytes do not fit.
    public var parameterData: ByteBuffer {
        var buffer = ByteBuffer()
        buffer.writeInteger(UInt32(8))
        buffer.writeInteger(UInt8(succeeded ? 1 : 2))
        buffer.writeInteger(segmentsProcessed)
        let fits = bytesCopied <= UInt64(UInt32.max)
        buffer.writeInteger(UInt8(fits ? 0 : 1))
        buffer.writeInteger(fits ? UInt32(bytesCopied) : UInt32(clamping: bytesCopied >> 10))
        return buffer
    }
}

/// RECEIVE COPY RESULTS service actions and parameter data (SPC-4 §6.18).
public enum SCSIReceiveCopyResults {
    public static let copyStatus: UInt8 = 0x00
    public static let operatingParameters: UInt8 = 0x03

    /// OPERATING PARAMETERS (SPC-4 §6.18.5): the limits above; no inline or held data, one copy at a time
    /// per command, no stream devices.
    public static var operatingParametersData: ByteBuffer {
        var buffer = ByteBuffer()
        let implemented = SCSICopyLimits.implementedDescriptors
        buffer.writeInteger(UInt32(40 + implemented.count))  // AVAILABLE DATA: bytes after this field.
        buffer.writeInteger(UInt8(0))  // SNLID 0: every copy has a list identifier.
        buffer.writeRepeatingByte(0, count: 3)
        buffer.writeInteger(SCSICopyLimits.maximumTargetDescriptors)
        buffer.writeInteger(SCSICopyLimits.maximumSegmentDescriptors)
        buffer.writeInteger(SCSICopyLimits.maximumDescriptorListLength)
        buffer.writeInteger(SCSICopyLimits.maximumSegmentLength)
        buffer.writeInteger(UInt32(0))  // Maximum inline data length.
        buffer.writeInteger(UInt32(0))  // Held data limit.
        buffer.writeInteger(UInt32(0))  // Maximum stream device transfer size.
        buffer.writeInteger(UInt16(0))
        buffer.writeInteger(UInt16(ISCSILimits.commandWindow))  // Total concurrent copies.
        buffer.writeInteger(UInt8(ISCSILimits.commandWindow))  // Maximum concurrent copies.
        buffer.writeInteger(UInt8(9))  // Data segment granularity: 2^9, one logical block.
        buffer.writeInteger(UInt8(0))
        buffer.writeInteger(UInt8(0))
        buffer.writeRepeatingByte(0, count: 3)
        buffer.writeInteger(UInt8(implemented.count))
        buffer.writeBytes(implemented)
        return buffer
    }
}
