import NIOCore

/// INQUIRY parameter data: the standard data and the vital product data pages (SPC-4 §6.6, §7.8;
/// SBC-4 §6.6).
extension SCSIDeviceProfile {
    /// VPD pages this target has, in the order page 00 lists them.
    public static let vitalProductDataPages: [UInt8] = [0x00, 0x80, 0x83, 0x8F, 0xB0, 0xB1, 0xB2]

    public func inquiry(vitalProductData: Bool, page: UInt8) throws(SCSISense) -> ByteBuffer {
        guard vitalProductData else { return standardInquiry }
        switch page {
        case 0x00: return vpdPage(0x00, Self.vitalProductDataPages)
        case 0x80: return vpdPage(0x80, Array(serial.utf8))
        case 0x83: return vpdPage(0x83, deviceIdentification)
        case 0x8F: return vpdPage(0x8F, thirdPartyCopy)
        case 0xB0: return vpdPage(0xB0, blockLimits)
        case 0xB1: return vpdPage(0xB1, blockDeviceCharacteristics)
        case 0xB2: return vpdPage(0xB2, logicalBlockProvisioning)
        default: throw .invalidFieldInCDB
        }
    }

    /// Standard INQUIRY data, 66 bytes with three version descriptors.
    var standardInquiry: ByteBuffer {
        var buffer = ByteBuffer()
        buffer.writeInteger(UInt8(0x00))  // Connected direct-access block device.
        buffer.writeInteger(UInt8(0x00))  // Not removable.
        buffer.writeInteger(UInt8(0x06))  // SPC-4.
        buffer.writeInteger(UInt8(0x12))  // HISUP, response data format 2.
        buffer.writeInteger(UInt8(66 - 5))  // Additional length.
        buffer.writeInteger(UInt8(0x08))  // 3PC: EXTENDED COPY is supported (SPC-4 §6.6.2).
        buffer.writeInteger(UInt8(0x00))
        buffer.writeInteger(UInt8(0x02))  // CMDQUE: commands are queued.
        buffer.writePadded(Self.vendor, width: 8)
        buffer.writePadded(Self.product, width: 16)
        buffer.writePadded(Self.revision, width: 4)
        buffer.writeRepeatingByte(0, count: 58 - 36)
        // Version descriptors: SAM-5, iSCSI (RFC 7143), SPC-4, SBC-3.
        for descriptor: UInt16 in [0x00A0, 0x0960, 0x0460] { buffer.writeInteger(descriptor) }
        buffer.writeInteger(UInt16(0x04C0))
        return buffer
    }

    func vpdPage(_ code: UInt8, _ payload: [UInt8]) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.writeInteger(UInt8(0x00))
        buffer.writeInteger(code)
        buffer.writeInteger(UInt16(payload.count))
        buffer.writeBytes(payload)
        return buffer
    }

    /// Page 83: an NAA designator and a T10 vendor designator, both for the logical unit.
    var deviceIdentification: [UInt8] {
        var page: [UInt8] = []
        // NAA (type 3), binary code set, associated with the logical unit: NAA 3 is "locally assigned".
        page += [0x01, 0x03, 0x00, 0x08]
        let naa = (UInt64(3) << 60) | (naaIdentifier & 0x0FFF_FFFF_FFFF_FFFF)
        page += withUnsafeBytes(of: naa.bigEndian) { Array($0) }
        // T10 vendor ID (type 1), ASCII: vendor then serial.
        var t10 = ByteBuffer()
        t10.writePadded(Self.vendor, width: 8)
        t10.writeString(serial)
        let ascii = Array(t10.readableBytesView)
        page += [0x02, 0x01, 0x00, UInt8(ascii.count)] + ascii
        return page
    }

    /// Page 8F (SPC-4 §7.8.17): the Supported Commands descriptor (EXTENDED COPY LID1, RECEIVE COPY
    /// RESULTS' COPY STATUS and OPERATING PARAMETERS) and the Parameter Data descriptor (the limits).
    var thirdPartyCopy: [UInt8] {
        var commands: [UInt8] = [SCSICommand.Opcode.extendedCopy, 1, 0x00]
        commands += [
            SCSICommand.Opcode.receiveCopyResults, 2, SCSIReceiveCopyResults.copyStatus,
            SCSIReceiveCopyResults.operatingParameters,
        ]
        var supported: [UInt8] = [UInt8(commands.count)] + commands
        supported += [UInt8](repeating: 0, count: (4 - supported.count % 4) % 4)
        var page: [UInt8] = [0x00, 0x01, 0x00, UInt8(supported.count)] + supported
        // Parameter Data descriptor (type 0x0008): CSCD and segment descriptor counts, list length,
        // inline data length, 28 bytes after its header.
        var parameters = ByteBuffer()
        parameters.writeInteger(UInt16(0x0008))
        parameters.writeInteger(UInt16(28))
        parameters.writeInteger(UInt16(0))
        parameters.writeInteger(SCSICopyLimits.maximumTargetDescriptors)
        parameters.writeInteger(SCSICopyLimits.maximumSegmentDescriptors)
        parameters.writeInteger(SCSICopyLimits.maximumDescriptorListLength)
        parameters.writeInteger(UInt32(0))
        parameters.writeRepeatingByte(0, count: 14)
        page += Array(parameters.readableBytesView)
        return page
    }

    /// Page B0 (SBC-4 §6.6.4), 60 bytes of limits.
    var blockLimits: [UInt8] {
        var buffer = ByteBuffer()
        buffer.writeInteger(UInt8(0))  // WSNZ 0: a WRITE SAME of 0 blocks means "to the end".
        buffer.writeInteger(ISCSILimits.maximumCompareAndWriteBlocks)
        buffer.writeInteger(UInt16(clamping: unmapGranularity))  // Optimal transfer length granularity: 4 KiB.
        buffer.writeInteger(ISCSILimits.maximumTransferLength / blockSize)
        buffer.writeInteger(ISCSILimits.targetMaxBurstLength / blockSize)  // Optimal transfer length.
        buffer.writeInteger(UInt32(0))  // Maximum prefetch length.
        buffer.writeInteger(thinProvisioned ? ISCSILimits.maximumUnmapBlocks : 0)
        buffer.writeInteger(thinProvisioned ? ISCSILimits.maximumUnmapDescriptors : 0)
        buffer.writeInteger(unmapGranularity)
        buffer.writeInteger(UInt32(0x8000_0000))  // UGAVALID, alignment 0.
        buffer.writeInteger(UInt64(ISCSILimits.maximumUnmapBlocks))  // Maximum WRITE SAME length.
        buffer.writeRepeatingByte(0, count: 60 - buffer.readableBytes)
        return Array(buffer.readableBytesView)
    }

    /// Page B1 (SBC-4 §6.6.2): a non-rotating medium.
    var blockDeviceCharacteristics: [UInt8] {
        var page = [UInt8](repeating: 0, count: 60)
        page[1] = 0x01
        return page
    }

    /// Page B2 (SBC-4 §6.6.5): UNMAP and WRITE SAME with UNMAP give space back; unmapped blocks read as
    /// zeros; thin provisioned.
    var logicalBlockProvisioning: [UInt8] {
        guard thinProvisioned else { return [0, 0, 0, 0] }
        // LBPU | LBPWS | LBPWS10, LBPRZ (bits 2-4 = 001).
        return [0x00, 0xE0 | 0x04, 0x02, 0x00]
    }
}
