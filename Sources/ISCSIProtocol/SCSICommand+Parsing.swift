/// Decoding a CDB (the 16 bytes of the SCSI Command PDU; shorter CDBs use its first bytes).
extension SCSICommand {
    /// The command in `cdb`, or the sense to refuse it with.
    public static func parse(_ cdb: [UInt8]) throws(SCSISense) -> SCSICommand {
        precondition(cdb.count >= 16)
        func u16(_ i: Int) -> UInt32 { UInt32(cdb[i]) << 8 | UInt32(cdb[i + 1]) }
        func u32(_ i: Int) -> UInt32 { u16(i) << 16 | u16(i + 2) }
        func u64(_ i: Int) -> UInt64 { UInt64(u32(i)) << 32 | UInt64(u32(i + 4)) }
        /// RDPROTECT / WRPROTECT / VRPROTECT (byte 1, bits 5-7): no protection information here, so any
        /// value but 0 is refused (SBC-4 §4.22.2 for a logical unit formatted without it).
        func noProtection() throws(SCSISense) { if cdb[1] & 0xE0 != 0 { throw .invalidFieldInCDB } }
        let fua = cdb[1] & 0x08 != 0
        switch cdb[0] {
        case Opcode.testUnitReady:
            return .testUnitReady
        case Opcode.requestSense:
            // DESC (byte 1 bit 0): descriptor-format sense is not offered.
            if cdb[1] & 0x01 != 0 { throw .invalidFieldInCDB }
            return .requestSense(allocation: UInt32(cdb[4]))
        case Opcode.inquiry:
            let evpd = cdb[1] & 0x01 != 0
            // CMDDT (obsolete) and a page code without EVPD are invalid (SPC-4 §6.6).
            if cdb[1] & 0x02 != 0 || (!evpd && cdb[2] != 0) { throw .invalidFieldInCDB }
            return .inquiry(vitalProductData: evpd, page: cdb[2], allocation: u16(3))
        case Opcode.readCapacity10:
            // PMI is obsolete; with it clear the LBA field must be zero (SBC-3 §5.15).
            if cdb[8] & 0x01 == 0, u32(2) != 0 { throw .invalidFieldInCDB }
            return .readCapacity10
        case Opcode.read6, Opcode.write6:
            let lba = UInt64(u32(0) & 0x001F_FFFF)
            // A transfer length of 0 means 256 blocks (SBC-4 §5.14).
            let blocks = cdb[4] == 0 ? 256 : UInt32(cdb[4])
            return cdb[0] == Opcode.read6 ? .read(lba: lba, blocks: blocks, fua: false) : .write(lba: lba, blocks: blocks, fua: false)
        case Opcode.read10, Opcode.write10:
            try noProtection()
            let lba = UInt64(u32(2))
            let blocks = u16(7)
            return cdb[0] == Opcode.read10 ? .read(lba: lba, blocks: blocks, fua: fua) : .write(lba: lba, blocks: blocks, fua: fua)
        case Opcode.read12, Opcode.write12:
            try noProtection()
            let lba = UInt64(u32(2))
            let blocks = u32(6)
            return cdb[0] == Opcode.read12 ? .read(lba: lba, blocks: blocks, fua: fua) : .write(lba: lba, blocks: blocks, fua: fua)
        case Opcode.read16, Opcode.write16:
            try noProtection()
            let lba = u64(2)
            let blocks = u32(10)
            return cdb[0] == Opcode.read16 ? .read(lba: lba, blocks: blocks, fua: fua) : .write(lba: lba, blocks: blocks, fua: fua)
        case Opcode.writeAndVerify10, Opcode.writeAndVerify12, Opcode.writeAndVerify16:
            // WRITE AND VERIFY: the write, made durable before GOOD (the medium is what is verified;
            // BYTCHK 1 compares the data just written with itself). BYTCHK 2 is reserved.
            try noProtection()
            if (cdb[1] >> 1) & 0x03 == 2 || (cdb[1] >> 1) & 0x03 == 3 { throw .invalidFieldInCDB }
            switch cdb[0] {
            case Opcode.writeAndVerify10: return .write(lba: UInt64(u32(2)), blocks: u16(7), fua: true)
            case Opcode.writeAndVerify12: return .write(lba: UInt64(u32(2)), blocks: u32(6), fua: true)
            default: return .write(lba: u64(2), blocks: u32(10), fua: true)
            }
        case Opcode.verify10, Opcode.verify12, Opcode.verify16:
            try noProtection()
            let byteCheck = (cdb[1] >> 1) & 0x03
            if byteCheck == 2 { throw .invalidFieldInCDB }
            switch cdb[0] {
            case Opcode.verify10: return .verify(lba: UInt64(u32(2)), blocks: u16(7), byteCheck: byteCheck)
            case Opcode.verify12: return .verify(lba: UInt64(u32(2)), blocks: u32(6), byteCheck: byteCheck)
            default: return .verify(lba: u64(2), blocks: u32(10), byteCheck: byteCheck)
            }
        case Opcode.synchronizeCache10:
            return .synchronizeCache(lba: UInt64(u32(2)), blocks: u16(7))
        case Opcode.synchronizeCache16:
            return .synchronizeCache(lba: u64(2), blocks: u32(10))
        case Opcode.writeSame10, Opcode.writeSame16:
            try noProtection()
            // ANCHOR (bit 4) asks for anchored blocks, which this target does not offer (VPD B2 ANC_SUP 0).
            if cdb[1] & 0x10 != 0 { throw .invalidFieldInCDB }
            let unmap = cdb[1] & 0x08 != 0
            if cdb[0] == Opcode.writeSame10 {
                if cdb[1] & 0x01 != 0 { throw .invalidFieldInCDB }
                return .writeSame(lba: UInt64(u32(2)), blocks: u16(7), unmap: unmap, noDataOut: false)
            }
            let noDataOut = cdb[1] & 0x01 != 0
            return .writeSame(lba: u64(2), blocks: u32(10), unmap: unmap, noDataOut: noDataOut)
        case Opcode.unmap:
            if cdb[1] & 0x01 != 0 { throw .invalidFieldInCDB }  // ANCHOR
            return .unmap(parameterLength: u16(7))
        case Opcode.compareAndWrite:
            try noProtection()
            return .compareAndWrite(lba: u64(2), blocks: UInt32(cdb[13]), fua: fua)
        case Opcode.orWrite16:
            // ORPROTECT sits where WRPROTECT does: no protection information, so only 0.
            try noProtection()
            return .orWrite(lba: u64(2), blocks: u32(10), fua: fua)
        case Opcode.serviceActionIn16:
            switch cdb[1] & 0x1F {
            case readCapacity16Action: return .readCapacity16(allocation: u32(10))
            case getLBAStatusAction: return .getLBAStatus(lba: u64(2), allocation: u32(10))
            default: throw .invalidFieldInCDB
            }
        case Opcode.modeSense6:
            return .modeSense(
                sixByte: true, disableBlockDescriptors: cdb[1] & 0x08 != 0, pageControl: cdb[2] >> 6,
                page: cdb[2] & 0x3F, subpage: cdb[3], allocation: UInt32(cdb[4]))
        case Opcode.modeSense10:
            return .modeSense(
                sixByte: false, disableBlockDescriptors: cdb[1] & 0x08 != 0, pageControl: cdb[2] >> 6,
                page: cdb[2] & 0x3F, subpage: cdb[3], allocation: u16(7))
        case Opcode.reportLUNs:
            // SPC-4 §6.33: an allocation length under 16 is invalid.
            let allocation = u32(6)
            if allocation < 16 { throw .invalidFieldInCDB }
            return .reportLUNs(selectReport: cdb[2], allocation: allocation)
        case Opcode.maintenanceIn:
            guard cdb[1] & 0x1F == reportSupportedOperationCodesAction else { throw .invalidFieldInCDB }
            return .reportSupportedOperationCodes(
                options: cdb[2] & 0x07, timeouts: cdb[2] & 0x80 != 0, opcode: cdb[3],
                serviceAction: UInt16(u16(4)), allocation: u32(6))
        case Opcode.extendedCopy:
            // Service action 0: the LID1 form (SPC-4 §6.4); LID4 (1) is not offered.
            guard cdb[1] & 0x1F == 0 else { throw .invalidFieldInCDB }
            return .extendedCopy(parameterLength: u32(10))
        case Opcode.receiveCopyResults:
            let action = cdb[1] & 0x1F
            guard action == SCSIReceiveCopyResults.copyStatus || action == SCSIReceiveCopyResults.operatingParameters
            else { throw .invalidFieldInCDB }
            return .receiveCopyResults(action: action, listID: cdb[2], allocation: u32(10))
        case Opcode.preFetch10:
            return .preFetch(lba: UInt64(u32(2)), blocks: u16(7))
        case Opcode.preFetch16:
            return .preFetch(lba: u64(2), blocks: u32(10))
        case Opcode.reserve6, Opcode.release6:
            // Byte 1 held the obsolete third-party and extent fields: only whole-unit reservations for the
            // sender are offered.
            if cdb[1] & 0x1F != 0 { throw .invalidFieldInCDB }
            return cdb[0] == Opcode.reserve6 ? .reserve : .release
        case Opcode.reserve10, Opcode.release10:
            // 3RDPTY and LONGID: third-party reservations are not offered (SPC-2 §7.21.2); the parameter
            // list length only matters with them.
            if cdb[1] & 0x12 != 0 { throw .invalidFieldInCDB }
            return cdb[0] == Opcode.reserve10 ? .reserve : .release
        case Opcode.persistentReserveIn:
            let action = cdb[1] & 0x1F
            guard action <= SCSIReservations.InAction.readFullStatus else { throw .invalidFieldInCDB }
            return .persistentReserveIn(action: action, allocation: u16(7))
        case Opcode.persistentReserveOut:
            // REGISTER AND MOVE (7) and higher are not offered.
            let action = cdb[1] & 0x1F
            guard action <= SCSIReservations.OutAction.registerAndIgnoreExistingKey else { throw .invalidFieldInCDB }
            let scope = cdb[2] >> 4
            let type = cdb[2] & 0x0F
            // RESERVE, RELEASE and the PREEMPTs take a scope and type: LU_SCOPE only (§6.16.2) and a type
            // of Table 179.
            if [1, 2, 4, 5].contains(action),
                scope != 0 || SCSIPersistentReservationType(rawValue: type) == nil
            {
                throw .invalidFieldInCDB
            }
            return .persistentReserveOut(action: action, scope: scope, type: type, parameterLength: u32(5))
        case Opcode.startStopUnit, Opcode.preventAllowMediumRemoval:
            return .noOperation
        default:
            throw .invalidOperationCode
        }
    }
}
