import ISCSIProtocol
import Logging
import NIOCore

/// Each SCSI command carried out against the logical unit (SBC-4 §5, SPC-4 §6).
extension ISCSIConnectionHandler {
    /// Largest piece of a WRITE SAME with a non-zero block written at once.
    static let writeSamePiece: UInt64 = 1 << 20

    func perform(
        _ command: SCSICommand, task: SCSITask, unit: any ISCSILogicalUnit, profile: SCSIDeviceProfile, data: ByteBuffer?,
        eventLoop: any EventLoop
    ) throws(SCSISense) -> EventLoopFuture<SCSIOutcome> {
        let block = UInt64(profile.blockSize)
        func done(_ outcome: SCSIOutcome) -> EventLoopFuture<SCSIOutcome> { eventLoop.makeSucceededFuture(outcome) }
        func parameterData(_ buffer: ByteBuffer, allocation: UInt32) -> EventLoopFuture<SCSIOutcome> {
            done(.data(buffer.getSlice(at: buffer.readerIndex, length: min(buffer.readableBytes, Int(allocation)))!))
        }
        switch command {
        case .testUnitReady, .noOperation:
            return done(.good(transferred: nil))
        case .requestSense(let allocation):
            return parameterData(SCSISense(key: 0, code: 0).fixedFormat, allocation: allocation)
        case .inquiry(let vpd, let page, let allocation):
            return parameterData(try profile.inquiry(vitalProductData: vpd, page: page), allocation: allocation)
        case .readCapacity10:
            return done(.data(profile.readCapacity10))
        case .readCapacity16(let allocation):
            return parameterData(profile.readCapacity16, allocation: allocation)
        case .modeSense(let six, let dbd, let pc, let page, let subpage, let allocation):
            let buffer = try profile.modeSense(
                sixByte: six, disableBlockDescriptors: dbd, pageControl: pc, page: page, subpage: subpage)
            return parameterData(buffer, allocation: allocation)
        case .reportLUNs(let select, let allocation):
            return parameterData(try SCSIDeviceProfile.reportLUNs(selectReport: select), allocation: allocation)
        case .reportSupportedOperationCodes(let options, let timeouts, let opcode, let action, let allocation):
            let buffer = try SCSISupportedCommands.report(
                options: options, timeouts: timeouts, opcode: opcode, serviceAction: action)
            return parameterData(buffer, allocation: allocation)
        case .read(let lba, let blocks, _):
            try Self.check(lba: lba, blocks: UInt64(blocks), profile: profile, writing: false)
            guard blocks > 0 else { return done(.good(transferred: nil)) }
            return unit.read(offset: lba * block, length: blocks * UInt32(block), eventLoop: eventLoop).map { .data($0) }
        case .write(let lba, let blocks, let fua):
            let cdbBytes = UInt64(blocks) * block
            // Only whole blocks the initiator actually sent are written (EDTL below the CDB: overflow).
            let usable = UInt64(data?.readableBytes ?? 0) / block * block
            let length = min(cdbBytes, usable)
            guard length > 0, var data else { return done(.good(transferred: cdbBytes)) }
            data = data.getSlice(at: data.readerIndex, length: Int(length))!
            return unit.write(offset: lba * block, data: data, fua: fua, eventLoop: eventLoop).map {
                .good(transferred: cdbBytes)
            }
        case .preFetch(let lba, let blocks):
            try Self.check(lba: lba, blocks: UInt64(blocks), profile: profile, writing: false)
            return done(.good(transferred: nil))
        case .synchronizeCache(let lba, let blocks):
            try Self.check(lba: lba, blocks: UInt64(blocks), profile: profile, writing: false)
            return unit.flush(eventLoop: eventLoop).map { .good(transferred: nil) }
        case .verify(let lba, let blocks, let byteCheck):
            guard byteCheck != 0, blocks > 0, let data else { return done(.good(transferred: nil)) }
            return unit.read(offset: lba * block, length: blocks * UInt32(block), eventLoop: eventLoop).map { stored in
                let expected = byteCheck == 1 ? data : Self.repeated(data, count: Int(blocks))
                if let offset = SCSICompare.firstDifference(stored, expected) { return .sense(.miscompare(at: offset)) }
                return .good(transferred: UInt64(data.readableBytes))
            }
        case .writeSame(let lba, var blocks, let unmap, let noDataOut):
            // WSNZ is 0: a length of 0 means "to the end of the unit" (SBC-4 §5.48).
            if blocks == 0 { blocks = UInt32(clamping: profile.blockCount - lba) }
            if blocks > ISCSILimits.maximumUnmapBlocks { throw .invalidFieldInCDB }
            let pattern = noDataOut ? ByteBuffer(repeating: 0, count: Int(block)) : data!
            if pattern.readableBytes < Int(block) { throw .parameterListLengthError }
            let offset = lba * block
            let length = UInt64(blocks) * block
            guard length > 0 else { return done(.good(transferred: nil)) }
            // With UNMAP the blocks are unmapped whatever the data block holds: unmapped blocks read as
            // zeros (LBPRZ), which is what initiators that send UNMAP expect back (SBC-4 §5.48).
            if unmap {
                return unit.unmap(offset: offset, length: length, fua: false, eventLoop: eventLoop)
                    .map { .good(transferred: nil) }
            }
            if pattern.readableBytesView.allSatisfy({ $0 == 0 }) {
                return unit.writeZeroes(offset: offset, length: length, fua: false, eventLoop: eventLoop)
                    .map { .good(transferred: nil) }
            }
            return writeRepeated(pattern, offset: offset, length: length, unit: unit, eventLoop: eventLoop)
                .map { .good(transferred: nil) }
        case .unmap:
            let ranges = try Self.unmapRanges(data ?? ByteBuffer(), profile: profile)
            var chain = eventLoop.makeSucceededVoidFuture()
            for (lba, blocks) in ranges where blocks > 0 {
                chain = chain.flatMap { unit.unmap(offset: lba * block, length: blocks * block, fua: false, eventLoop: eventLoop) }
            }
            return chain.map { .good(transferred: nil) }
        case .compareAndWrite(let lba, let blocks, let fua):
            guard blocks > 0 else { return done(.good(transferred: nil)) }
            let half = Int(UInt64(blocks) * block)
            guard let data, data.readableBytes >= 2 * half else { return done(.sense(.dataPhaseError)) }
            let expected = data.getSlice(at: data.readerIndex, length: half)!
            let replacement = data.getSlice(at: data.readerIndex + half, length: half)!
            return unit.compareAndWrite(
                offset: lba * block, expected: expected, data: replacement, fua: fua, eventLoop: eventLoop
            ).map { miscompare in miscompare.map { .sense(.miscompare(at: $0)) } ?? .good(transferred: nil) }
        case .orWrite(let lba, let blocks, let fua):
            guard blocks > 0 else { return done(.good(transferred: nil)) }
            let length = Int(UInt64(blocks) * block)
            guard let data, data.readableBytes >= length else { return done(.sense(.dataPhaseError)) }
            return unit.orWrite(
                offset: lba * block, data: data.getSlice(at: data.readerIndex, length: length)!, fua: fua,
                eventLoop: eventLoop
            ).map { .good(transferred: nil) }
        case .reserve, .release, .persistentReserveIn, .persistentReserveOut:
            guard let nexus else { throw .invalidOperationCode }
            return reservations.execute(
                command, parameters: data, from: nexus, unit: unit.identifier, eventLoop: eventLoop
            ).flatMap { outcome in
                switch outcome {
                case .good: return done(.good(transferred: nil))
                case .data(let buffer):
                    guard case .persistentReserveIn(_, let allocation) = command else { return done(.data(buffer)) }
                    return parameterData(buffer, allocation: allocation)
                case .conflict: return done(.reservationConflict)
                case .sense(let sense): return done(.sense(sense))
                }
            }
        case .extendedCopy:
            return try extendedCopy(data, unit: unit, eventLoop: eventLoop)
        case .receiveCopyResults(let action, let listID, let allocation):
            return parameterData(try receiveCopyResults(action: action, listID: listID), allocation: allocation)
        case .getLBAStatus(let lba, let allocation):
            guard lba < profile.blockCount else { throw .lbaOutOfRange }
            let offset = lba * block
            let span = min(profile.blockCount * block - offset, UInt64(ISCSILimits.maximumTransferLength) * 32)
            return unit.allocation(offset: offset, length: span, eventLoop: eventLoop).map { extents in
                // Descriptors that fit the allocation length; at least the first one.
                let room = max(1, (Int(allocation) - 8) / 16)
                let blocks = extents.prefix(room).map { (blocks: max($0.length / block, 1), mapped: $0.mapped) }
                let buffer = SCSIDeviceProfile.lbaStatus(lba: lba, extents: blocks)
                return .data(buffer.getSlice(at: buffer.readerIndex, length: min(buffer.readableBytes, Int(allocation)))!)
            }
        }
    }

    /// UNMAP's parameter list (SBC-4 §5.28.2): the (lba, blocks) of its block descriptors, checked.
    static func unmapRanges(_ list: ByteBuffer, profile: SCSIDeviceProfile) throws(SCSISense) -> [(UInt64, UInt64)] {
        if list.readableBytes == 0 { return [] }
        guard list.readableBytes >= 8 else { throw .parameterListLengthError }
        let start = list.readerIndex
        let descriptorBytes = Int(list.getInteger(at: start + 2, as: UInt16.self)!)
        let count = min(descriptorBytes, list.readableBytes - 8) / 16
        guard count <= Int(ISCSILimits.maximumUnmapDescriptors) else { throw .invalidFieldInParameterList }
        var ranges: [(UInt64, UInt64)] = []
        for index in 0..<count {
            let at = start + 8 + index * 16
            let lba = list.getInteger(at: at, as: UInt64.self)!
            let blocks = UInt64(list.getInteger(at: at + 8, as: UInt32.self)!)
            let (end, overflow) = lba.addingReportingOverflow(blocks)
            if overflow || end > profile.blockCount { throw .lbaOutOfRange }
            if blocks > UInt64(ISCSILimits.maximumUnmapBlocks) { throw .invalidFieldInParameterList }
            ranges.append((lba, blocks))
        }
        return ranges
    }

    /// WRITE SAME with a non-zero block: the block repeated, written a piece at a time.
    func writeRepeated(
        _ pattern: ByteBuffer, offset: UInt64, length: UInt64, unit: any ISCSILogicalUnit, eventLoop: any EventLoop
    ) -> EventLoopFuture<Void> {
        let blockSize = UInt64(pattern.readableBytes)
        let pieceBlocks = max(Self.writeSamePiece / blockSize, 1)
        let piece = Self.repeated(pattern, count: Int(min(pieceBlocks, length / blockSize)))
        var chain = eventLoop.makeSucceededVoidFuture()
        var position = offset
        while position < offset + length {
            let count = min(UInt64(piece.readableBytes), offset + length - position)
            let at = position
            chain = chain.flatMap {
                unit.write(offset: at, data: piece.getSlice(at: piece.readerIndex, length: Int(count))!, fua: false, eventLoop: eventLoop)
            }
            position += count
        }
        return chain
    }

    static func repeated(_ block: ByteBuffer, count: Int) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.reserveCapacity(block.readableBytes * count)
        for _ in 0..<count { buffer.writeImmutableBuffer(block) }
        return buffer
    }

}
