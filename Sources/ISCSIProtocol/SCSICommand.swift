/// A block command this target understands, decoded from its CDB (SBC-4, SPC-4). Fields are in logical
/// blocks; parsing refuses reserved and protection fields it does not support with INVALID FIELD IN CDB.
public enum SCSICommand: Sendable, Equatable {
    case testUnitReady
    case requestSense(allocation: UInt32)
    case inquiry(vitalProductData: Bool, page: UInt8, allocation: UInt32)
    case readCapacity10
    case readCapacity16(allocation: UInt32)
    case read(lba: UInt64, blocks: UInt32, fua: Bool)
    case write(lba: UInt64, blocks: UInt32, fua: Bool)
    /// VERIFY: `byteCheck` 0 checks the medium only, 1 compares with data sent, 3 compares one block with
    /// every block (SBC-4 §5.34).
    case verify(lba: UInt64, blocks: UInt32, byteCheck: UInt8)
    case synchronizeCache(lba: UInt64, blocks: UInt32)
    case writeSame(lba: UInt64, blocks: UInt32, unmap: Bool, noDataOut: Bool)
    case unmap(parameterLength: UInt32)
    case compareAndWrite(lba: UInt64, blocks: UInt32, fua: Bool)
    /// ORWRITE(16): the data-out ORed into the stored blocks (SBC-4 §5.11, BMOP 0), atomically as COMPARE
    /// AND WRITE.
    case orWrite(lba: UInt64, blocks: UInt32, fua: Bool)
    case getLBAStatus(lba: UInt64, allocation: UInt32)
    case modeSense(sixByte: Bool, disableBlockDescriptors: Bool, pageControl: UInt8, page: UInt8, subpage: UInt8, allocation: UInt32)
    case reportLUNs(selectReport: UInt8, allocation: UInt32)
    case reportSupportedOperationCodes(
        options: UInt8, timeouts: Bool, opcode: UInt8, serviceAction: UInt16, allocation: UInt32)
    /// EXTENDED COPY (LID1): the parameter list follows as data-out (`SCSIExtendedCopyList`).
    case extendedCopy(parameterLength: UInt32)
    /// RECEIVE COPY RESULTS: COPY STATUS of list `listID`, or OPERATING PARAMETERS.
    case receiveCopyResults(action: UInt8, listID: UInt8, allocation: UInt32)
    /// PRE-FETCH: the range is checked; the page cache already holds what was recently used.
    case preFetch(lba: UInt64, blocks: UInt32)
    /// RESERVE(6)/(10): the logical unit for this I_T nexus alone (SPC-2 §7.21; `SCSIReservations`).
    case reserve
    /// RELEASE(6)/(10): ends this I_T nexus's RESERVE; from any other nexus it does nothing (SPC-2 §7.17).
    case release
    /// PERSISTENT RESERVE IN (SPC-4 §6.15): READ KEYS, READ RESERVATION, REPORT CAPABILITIES, READ FULL
    /// STATUS.
    case persistentReserveIn(action: UInt8, allocation: UInt32)
    /// PERSISTENT RESERVE OUT (SPC-4 §6.16): the basic 24-byte parameter list follows as data-out. `type` is
    /// checked for the actions that use it.
    case persistentReserveOut(action: UInt8, scope: UInt8, type: UInt8, parameterLength: UInt32)
    /// START STOP UNIT, PREVENT ALLOW MEDIUM REMOVAL: accepted and nothing done (no removable media).
    case noOperation

    /// Operation codes (SBC-4 Table 8, SPC-4 Table 62).
    public enum Opcode {
        public static let testUnitReady: UInt8 = 0x00
        public static let requestSense: UInt8 = 0x03
        public static let read6: UInt8 = 0x08
        public static let write6: UInt8 = 0x0A
        public static let inquiry: UInt8 = 0x12
        public static let modeSense6: UInt8 = 0x1A
        public static let startStopUnit: UInt8 = 0x1B
        public static let preventAllowMediumRemoval: UInt8 = 0x1E
        public static let reserve6: UInt8 = 0x16
        public static let release6: UInt8 = 0x17
        public static let readCapacity10: UInt8 = 0x25
        public static let read10: UInt8 = 0x28
        public static let write10: UInt8 = 0x2A
        public static let writeAndVerify10: UInt8 = 0x2E
        public static let verify10: UInt8 = 0x2F
        public static let preFetch10: UInt8 = 0x34
        public static let synchronizeCache10: UInt8 = 0x35
        public static let writeSame10: UInt8 = 0x41
        public static let unmap: UInt8 = 0x42
        public static let reserve10: UInt8 = 0x56
        public static let release10: UInt8 = 0x57
        public static let modeSense10: UInt8 = 0x5A
        public static let persistentReserveIn: UInt8 = 0x5E
        public static let persistentReserveOut: UInt8 = 0x5F
        public static let extendedCopy: UInt8 = 0x83
        public static let receiveCopyResults: UInt8 = 0x84
        public static let read16: UInt8 = 0x88
        public static let compareAndWrite: UInt8 = 0x89
        public static let write16: UInt8 = 0x8A
        public static let orWrite16: UInt8 = 0x8B
        public static let writeAndVerify16: UInt8 = 0x8E
        public static let verify16: UInt8 = 0x8F
        public static let preFetch16: UInt8 = 0x90
        public static let synchronizeCache16: UInt8 = 0x91
        public static let writeSame16: UInt8 = 0x93
        public static let serviceActionIn16: UInt8 = 0x9E
        public static let reportLUNs: UInt8 = 0xA0
        public static let maintenanceIn: UInt8 = 0xA3
        public static let read12: UInt8 = 0xA8
        public static let write12: UInt8 = 0xAA
        public static let writeAndVerify12: UInt8 = 0xAE
        public static let verify12: UInt8 = 0xAF
    }

    /// SERVICE ACTION IN(16) actions.
    public static let readCapacity16Action: UInt8 = 0x10
    public static let getLBAStatusAction: UInt8 = 0x12
    /// MAINTENANCE IN action REPORT SUPPORTED OPERATION CODES.
    public static let reportSupportedOperationCodesAction: UInt8 = 0x0C
}
