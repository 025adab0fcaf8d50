import NIOCore

/// REPORT SUPPORTED OPERATION CODES (SPC-4 §6.35): the commands `SCSICommand.parse` accepts, with their
/// CDB usage masks.
public enum SCSISupportedCommands {
    struct Entry {
        var opcode: UInt8
        var serviceAction: UInt16?
        /// The CDB usage data: for each CDB byte, the bits the command looks at.
        var usage: [UInt8]
    }

    typealias O = SCSICommand.Opcode
    // Usage masks follow the CDB layouts parse() reads; the last byte is CONTROL (NACA, link: not used).
    static let entries: [Entry] = [
        Entry(opcode: O.testUnitReady, usage: [O.testUnitReady, 0, 0, 0, 0, 0]),
        Entry(opcode: O.requestSense, usage: [O.requestSense, 0, 0, 0, 0xFF, 0]),
        Entry(opcode: O.read6, usage: [O.read6, 0x1F, 0xFF, 0xFF, 0xFF, 0]),
        Entry(opcode: O.write6, usage: [O.write6, 0x1F, 0xFF, 0xFF, 0xFF, 0]),
        Entry(opcode: O.inquiry, usage: [O.inquiry, 0x01, 0xFF, 0xFF, 0xFF, 0]),
        Entry(opcode: O.reserve6, usage: [O.reserve6, 0, 0, 0, 0, 0]),
        Entry(opcode: O.release6, usage: [O.release6, 0, 0, 0, 0, 0]),
        Entry(opcode: O.modeSense6, usage: [O.modeSense6, 0x08, 0xFF, 0xFF, 0xFF, 0]),
        Entry(opcode: O.startStopUnit, usage: [O.startStopUnit, 0x01, 0, 0x0F, 0xF7, 0]),
        Entry(opcode: O.preventAllowMediumRemoval, usage: [O.preventAllowMediumRemoval, 0, 0, 0, 0x03, 0]),
        Entry(opcode: O.readCapacity10, usage: [O.readCapacity10, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0x01, 0]),
        Entry(opcode: O.read10, usage: [O.read10, 0x18, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0xFF, 0xFF, 0]),
        Entry(opcode: O.write10, usage: [O.write10, 0x18, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0xFF, 0xFF, 0]),
        Entry(opcode: O.writeAndVerify10, usage: [O.writeAndVerify10, 0x12, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0xFF, 0xFF, 0]),
        Entry(opcode: O.verify10, usage: [O.verify10, 0x16, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0xFF, 0xFF, 0]),
        Entry(opcode: O.preFetch10, usage: [O.preFetch10, 0x02, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0xFF, 0xFF, 0]),
        Entry(opcode: O.synchronizeCache10, usage: [O.synchronizeCache10, 0x06, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0xFF, 0xFF, 0]),
        Entry(opcode: O.writeSame10, usage: [O.writeSame10, 0x08, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0xFF, 0xFF, 0]),
        Entry(opcode: O.unmap, usage: [O.unmap, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0]),
        Entry(opcode: O.reserve10, usage: [O.reserve10, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
        Entry(opcode: O.release10, usage: [O.release10, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
        Entry(opcode: O.modeSense10, usage: [O.modeSense10, 0x18, 0xFF, 0xFF, 0, 0, 0, 0xFF, 0xFF, 0]),
        Entry(opcode: O.persistentReserveIn, serviceAction: 0,
            usage: [O.persistentReserveIn, 0x1F, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0]),
        Entry(opcode: O.persistentReserveIn, serviceAction: 1,
            usage: [O.persistentReserveIn, 0x1F, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0]),
        Entry(opcode: O.persistentReserveIn, serviceAction: 2,
            usage: [O.persistentReserveIn, 0x1F, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0]),
        Entry(opcode: O.persistentReserveIn, serviceAction: 3,
            usage: [O.persistentReserveIn, 0x1F, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0]),
        Entry(opcode: O.persistentReserveOut, serviceAction: 0,
            usage: [O.persistentReserveOut, 0x1F, 0xFF, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0]),
        Entry(opcode: O.persistentReserveOut, serviceAction: 1,
            usage: [O.persistentReserveOut, 0x1F, 0xFF, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0]),
        Entry(opcode: O.persistentReserveOut, serviceAction: 2,
            usage: [O.persistentReserveOut, 0x1F, 0xFF, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0]),
        Entry(opcode: O.persistentReserveOut, serviceAction: 3,
            usage: [O.persistentReserveOut, 0x1F, 0xFF, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0]),
        Entry(opcode: O.persistentReserveOut, serviceAction: 4,
            usage: [O.persistentReserveOut, 0x1F, 0xFF, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0]),
        Entry(opcode: O.persistentReserveOut, serviceAction: 5,
            usage: [O.persistentReserveOut, 0x1F, 0xFF, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0]),
        Entry(opcode: O.persistentReserveOut, serviceAction: 6,
            usage: [O.persistentReserveOut, 0x1F, 0xFF, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0]),
        Entry(opcode: O.extendedCopy, serviceAction: 0,
            usage: [O.extendedCopy, 0x00] + [UInt8](repeating: 0, count: 8) + [0xFF, 0xFF, 0xFF, 0xFF, 0, 0]),
        Entry(opcode: O.receiveCopyResults, serviceAction: UInt16(SCSIReceiveCopyResults.copyStatus),
            usage: [O.receiveCopyResults, 0x00, 0xFF] + [UInt8](repeating: 0, count: 7) + [0xFF, 0xFF, 0xFF, 0xFF, 0, 0]),
        Entry(opcode: O.receiveCopyResults, serviceAction: UInt16(SCSIReceiveCopyResults.operatingParameters),
            usage: [O.receiveCopyResults, 0x03] + [UInt8](repeating: 0, count: 8) + [0xFF, 0xFF, 0xFF, 0xFF, 0, 0]),
        Entry(opcode: O.read16, usage: [O.read16, 0x18] + [UInt8](repeating: 0xFF, count: 12) + [0, 0]),
        Entry(opcode: O.compareAndWrite, usage: [O.compareAndWrite, 0x18] + [UInt8](repeating: 0xFF, count: 8) + [0, 0, 0, 0xFF, 0, 0]),
        Entry(opcode: O.write16, usage: [O.write16, 0x18] + [UInt8](repeating: 0xFF, count: 12) + [0, 0]),
        Entry(opcode: O.orWrite16, usage: [O.orWrite16, 0x18] + [UInt8](repeating: 0xFF, count: 12) + [0, 0]),
        Entry(opcode: O.writeAndVerify16, usage: [O.writeAndVerify16, 0x12] + [UInt8](repeating: 0xFF, count: 12) + [0, 0]),
        Entry(opcode: O.verify16, usage: [O.verify16, 0x16] + [UInt8](repeating: 0xFF, count: 12) + [0, 0]),
        Entry(opcode: O.preFetch16, usage: [O.preFetch16, 0x02] + [UInt8](repeating: 0xFF, count: 12) + [0, 0]),
        Entry(opcode: O.synchronizeCache16, usage: [O.synchronizeCache16, 0x06] + [UInt8](repeating: 0xFF, count: 12) + [0, 0]),
        Entry(opcode: O.writeSame16, usage: [O.writeSame16, 0x09] + [UInt8](repeating: 0xFF, count: 12) + [0, 0]),
        Entry(opcode: O.serviceActionIn16, serviceAction: UInt16(SCSICommand.readCapacity16Action),
            usage: [O.serviceActionIn16, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0]),
        Entry(opcode: O.serviceActionIn16, serviceAction: UInt16(SCSICommand.getLBAStatusAction),
            usage: [O.serviceActionIn16, 0x12] + [UInt8](repeating: 0xFF, count: 12) + [0, 0]),
        Entry(opcode: O.reportLUNs, usage: [O.reportLUNs, 0, 0xFF, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0]),
        Entry(opcode: O.maintenanceIn, serviceAction: UInt16(SCSICommand.reportSupportedOperationCodesAction),
            usage: [O.maintenanceIn, 0x0C, 0x87, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0]),
        Entry(opcode: O.read12, usage: [O.read12, 0x18] + [UInt8](repeating: 0xFF, count: 8) + [0, 0]),
        Entry(opcode: O.write12, usage: [O.write12, 0x18] + [UInt8](repeating: 0xFF, count: 8) + [0, 0]),
        Entry(opcode: O.writeAndVerify12, usage: [O.writeAndVerify12, 0x12] + [UInt8](repeating: 0xFF, count: 8) + [0, 0]),
        Entry(opcode: O.verify12, usage: [O.verify12, 0x16] + [UInt8](repeating: 0xFF, count: 8) + [0, 0]),
    ]

    /// The parameter data for the CDB's reporting options.
    public static func report(options: UInt8, timeouts: Bool, opcode: UInt8, serviceAction: UInt16) throws(SCSISense)
        -> ByteBuffer
    {
        var buffer = ByteBuffer()
        switch options {
        case 0:
            var descriptors = ByteBuffer()
            for entry in entries {
                descriptors.writeInteger(entry.opcode)
                descriptors.writeInteger(UInt8(0))
                descriptors.writeInteger(entry.serviceAction ?? 0)
                descriptors.writeInteger(UInt8(0))
                descriptors.writeInteger(UInt8((timeouts ? 0x02 : 0) | (entry.serviceAction == nil ? 0 : 0x01)))
                descriptors.writeInteger(UInt16(entry.usage.count))
                if timeouts { writeTimeouts(&descriptors) }
            }
            buffer.writeInteger(UInt32(descriptors.readableBytes))
            buffer.writeImmutableBuffer(descriptors)
        case 1, 2, 3:
            let hasActions = entries.contains { $0.opcode == opcode && $0.serviceAction != nil }
            // Option 1 names a command without service actions, 2 one with; 3 either (SPC-5).
            // The reporting options (byte 2, bits 2..0) are what is wrong, not the command: said so, so
            // that the initiator does not take the refusal for "REPORT SUPPORTED OPERATION CODES unsupported".
            if options == 1 && hasActions { throw .invalidFieldInCDB(byte: 2, bit: 2) }
            if options == 2 && !hasActions { throw .invalidFieldInCDB(byte: 2, bit: 2) }
            let match = entries.first {
                $0.opcode == opcode && (hasActions ? $0.serviceAction == serviceAction : true)
            }
            buffer.writeInteger(UInt8(0))
            guard let match else {
                // SUPPORT 001: not supported; no CDB usage data.
                buffer.writeInteger(UInt8(0x01))
                buffer.writeInteger(UInt16(0))
                return buffer
            }
            buffer.writeInteger(UInt8((timeouts ? 0x80 : 0) | 0x03))  // CTDP, SUPPORT 011: supported.
            buffer.writeInteger(UInt16(match.usage.count))
            buffer.writeBytes(match.usage)
            if timeouts { writeTimeouts(&buffer) }
        default:
            throw .invalidFieldInCDB(byte: 2, bit: 2)
        }
        return buffer
    }

    /// A command timeouts descriptor (SPC-4 §6.35.4) with no timeouts given.
    static func writeTimeouts(_ buffer: inout ByteBuffer) {
        buffer.writeInteger(UInt16(0x0A))
        buffer.writeRepeatingByte(0, count: 10)
    }
}
