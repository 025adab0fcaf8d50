import ISCSIProtocol
import Logging
import NIOCore

/// How a SCSI command ended.
enum SCSIOutcome {
    /// GOOD, no data-in; `transferred`: the data-out bytes the command used (for the residual).
    case good(transferred: UInt64?)
    /// GOOD with data-in (already cut to the allocation length).
    case data(ByteBuffer)
    /// CHECK CONDITION with this sense.
    case sense(SCSISense)
    /// RESERVATION CONFLICT: another I_T nexus's reservation excludes the command.
    case reservationConflict
}

/// SCSI Command PDUs: admission, data-out collection, execution in the logical unit, and the response.
extension ISCSIConnectionHandler {
    func handleSCSICommand(_ pdu: ISCSIPDU) {
        let task = SCSITask(
            tag: pdu.initiatorTaskTag, immediate: pdu.isImmediate, expectedLength: pdu.uint32(20), opcode: pdu.byte(32))
        guard case .normal(let parameters, let unit) = phase else {
            // A discovery session carries no SCSI commands (RFC 7143 §4.3).
            finishTask(task)
            send(.reject(.protocolError, rejected: pdu.header), status: false)
            return
        }
        let cdb = (32..<48).map { pdu.byte($0) }
        if pdu.logicalUnit != 0, cdb[0] != SCSICommand.Opcode.reportLUNs, cdb[0] != SCSICommand.Opcode.inquiry {
            complete(task, .sense(.logicalUnitNotSupported))
            return
        }
        // The unit's size is read once per command (it takes the engine's lock): the unit attention check
        // and every bound below see the same capacity.
        let capacity = unit.size
        let profile = Self.profile(of: unit, size: capacity)
        // A pending unit attention is reported before the CDB is even looked at (SAM-5 §5.14); REQUEST
        // SENSE takes it once its own CDB has been accepted, so a refused one clears nothing.
        let attentionClass = SCSIUnitAttentions.CommandClass(opcode: cdb[0])
        if let nexus, attentionClass != .requestSense,
            case .checkCondition(let sense) = reservations.unitAttentions.command(
                opcode: cdb[0], from: nexus, unit: unit.identifier, capacity: capacity, clearance: &attentionClearance)
        {
            complete(task, .sense(sense))
            return
        }
        let command: SCSICommand
        do { command = try SCSICommand.parse(cdb) } catch {
            complete(task, .sense(error))
            return
        }
        if let nexus, case .requestSense(let allocation) = command,
            case .senseData(let sense) = reservations.unitAttentions.command(
                opcode: cdb[0], from: nexus, unit: unit.identifier, capacity: capacity, clearance: &attentionClearance)
        {
            let data = sense.fixedFormat
            let length = min(data.readableBytes, Int(allocation))
            complete(task, .data(data.getSlice(at: data.readerIndex, length: length)!))
            return
        }
        // Before any data is asked for: a write held off by a reservation takes none (SPC-4 §5.13.1).
        if let nexus, !reservations.permits(command, from: nexus, unit: unit.identifier) {
            complete(task, .reservationConflict)
            return
        }
        let outLength: UInt64
        do { outLength = try Self.dataOutLength(command, profile: profile) } catch {
            complete(task, .sense(error))
            return
        }
        // WRITE SAME's one block, COMPARE AND WRITE's two halves and ORWRITE's blocks must arrive whole: a
        // different Expected Data Transfer Length is refused before any data is taken (unlike WRITE, where
        // the residual says what was used).
        if UInt64(task.expectedLength) != outLength {
            switch command {
            case .writeSame, .compareAndWrite, .orWrite, .persistentReserveOut:
                complete(task, .sense(.invalidFieldInCDB))
                return
            default:
                break
            }
        }
        guard outLength > 0 else {
            run(task, command, unit: unit, profile: profile, data: nil)
            return
        }
        if parameters.immediateData == false && pdu.data.readableBytes > 0 {
            send(.reject(.protocolError, rejected: pdu.header), status: false)
            finishTask(task)
            return
        }
        let needed = UInt32(min(outLength, UInt64(task.expectedLength)))
        let pending = PendingWrite(
            task: task, command: command, unit: unit, profile: profile, needed: needed, data: pdu.data,
            unsolicitedOpen: !pdu.isFinal && !parameters.initialR2T)
        beginDataOut(pending, parameters: parameters)
    }

    /// `size`: the unit's size in bytes, when the caller has read it already.
    static func profile(of unit: any ISCSILogicalUnit, size: UInt64? = nil) -> SCSIDeviceProfile {
        SCSIDeviceProfile(
            blockCount: (size ?? unit.size) / 512, readOnly: unit.readOnly, serial: unit.serial, naaIdentifier: unit.identifier)
    }

    /// Bytes of data-out the CDB says follow; checks made before any data is asked for.
    static func dataOutLength(_ command: SCSICommand, profile: SCSIDeviceProfile) throws(SCSISense) -> UInt64 {
        let block = UInt64(profile.blockSize)
        switch command {
        case .write(let lba, let blocks, _):
            try check(lba: lba, blocks: UInt64(blocks), profile: profile, writing: true)
            return UInt64(blocks) * block
        case .writeSame(let lba, let blocks, _, let noDataOut):
            try check(lba: lba, blocks: UInt64(blocks), profile: profile, writing: true)
            return noDataOut ? 0 : block
        case .unmap(let length):
            if profile.readOnly { throw .writeProtected }
            return UInt64(length)
        case .compareAndWrite(let lba, let blocks, _):
            if blocks > UInt32(ISCSILimits.maximumCompareAndWriteBlocks) { throw .invalidFieldInCDB }
            try check(lba: lba, blocks: UInt64(blocks), profile: profile, writing: true)
            return 2 * UInt64(blocks) * block
        case .orWrite(let lba, let blocks, _):
            try check(lba: lba, blocks: UInt64(blocks), profile: profile, writing: true)
            return UInt64(blocks) * block
        case .persistentReserveOut(_, _, _, let length):
            // Only the basic parameter list is offered (no SPEC_I_PT, no REGISTER AND MOVE).
            if length != SCSIReservations.parameterListLength { throw .parameterListLengthError }
            return UInt64(length)
        case .extendedCopy(let length):
            if length > maximumCopyParameterLength { throw .parameterListLengthError }
            return UInt64(length)
        case .verify(let lba, let blocks, let byteCheck):
            try check(lba: lba, blocks: UInt64(blocks), profile: profile, writing: false)
            return byteCheck == 1 ? UInt64(blocks) * block : byteCheck == 3 && blocks > 0 ? block : 0
        default:
            return 0
        }
    }

    /// Write protection, the end of the unit, and the transfer limit (SBC-4 §4.5, VPD B0).
    static func check(lba: UInt64, blocks: UInt64, profile: SCSIDeviceProfile, writing: Bool) throws(SCSISense) {
        if writing && profile.readOnly { throw .writeProtected }
        let (end, overflow) = lba.addingReportingOverflow(blocks)
        if overflow || end > profile.blockCount {
            throw .lbaOutOfRange
        }
        if blocks * UInt64(profile.blockSize) > UInt64(ISCSILimits.maximumTransferLength) { throw .invalidFieldInCDB }
    }

    /// Runs `command` in the logical unit and answers when it completes.
    func run(
        _ task: SCSITask, _ command: SCSICommand, unit: any ISCSILogicalUnit, profile: SCSIDeviceProfile, data: ByteBuffer?
    ) {
        guard let context else { return }
        let eventLoop = context.eventLoop
        runningTasks.insert(task.tag)
        if let data, data.readableBytes > 0 { metrics?.transferred(dataIn: 0, dataOut: UInt64(data.readableBytes)) }
        let future: EventLoopFuture<SCSIOutcome>
        do {
            future = try perform(command, task: task, unit: unit, profile: profile, data: data, eventLoop: eventLoop)
        } catch {
            future = eventLoop.makeSucceededFuture(.sense(error))
        }
        future.hop(to: eventLoop).assumeIsolated().whenComplete { [self] result in
            runningTasks.remove(task.tag)
            if abortedTasks.remove(task.tag) != nil {
                finishTask(task)
                return
            }
            if case .closed = phase { return }
            switch result {
            case .success(let outcome): complete(task, outcome)
            case .failure(let error as ISCSILogicalUnitError):
                if error.code == .ioError { logger.error("I/O error", metadata: ["error": "\(error.message)"]) }
                complete(task, .sense(error.sense))
            case .failure(let error):
                logger.error("command failed", metadata: ["error": "\(error)"])
                complete(task, .sense(.internalTargetFailure))
            }
            flushSoon()
        }
    }

    /// Reopens the window slot of a task answered or dropped.
    func finishTask(_ task: SCSITask) {
        if !task.immediate { window.finish() }
    }

    /// Sends the command's data (Data-In, status in the last PDU) or its SCSI Response.
    func complete(_ task: SCSITask, _ outcome: SCSIOutcome) {
        finishTask(task)
        if let metrics {
            switch outcome {
            case .sense: metrics.command(opcode: task.opcode, status: SCSIStatus.checkCondition)
            case .reservationConflict: metrics.command(opcode: task.opcode, status: SCSIStatus.reservationConflict)
            case .good, .data: metrics.command(opcode: task.opcode, status: SCSIStatus.good)
            }
            if case .data(let data) = outcome {
                metrics.transferred(dataIn: UInt64(min(data.readableBytes, Int(task.expectedLength))), dataOut: 0)
            }
        }
        switch outcome {
        case .sense(let sense):
            send(.scsiResponse(taskTag: task.tag, status: SCSIStatus.checkCondition, sense: sense.fixedFormat))
        case .reservationConflict:
            send(.scsiResponse(taskTag: task.tag, status: SCSIStatus.reservationConflict))
        case .good(let transferred):
            let residual = transferred.map { ISCSIPDU.Residual(expected: task.expectedLength, actual: $0) } ?? .none
            send(.scsiResponse(taskTag: task.tag, status: SCSIStatus.good, residual: task.expectedLength == 0 && transferred == nil ? .none : residual))
        case .data(let data):
            let residual = ISCSIPDU.Residual(expected: task.expectedLength, actual: UInt64(data.readableBytes))
            let length = min(data.readableBytes, Int(task.expectedLength))
            guard length > 0 else {
                send(.scsiResponse(taskTag: task.tag, status: SCSIStatus.good, residual: residual))
                return
            }
            let segment = Int(parameters?.initiatorMaxRecvDataSegmentLength ?? ISCSILimits.defaultDataSegmentLength)
            let burst = Int(parameters?.maxBurstLength ?? UInt32(segment))
            var offset = 0
            var dataSN: UInt32 = 0
            while offset < length {
                // A PDU ends at the segment limit and at each MaxBurstLength boundary (a Data-In sequence).
                let burstEnd = (offset / burst + 1) * burst
                let count = min(segment, length - offset, burstEnd - offset)
                let last = offset + count == length
                let pdu = ISCSIPDU.dataIn(
                    taskTag: task.tag, data: data.getSlice(at: data.readerIndex + offset, length: count)!, dataSN: dataSN,
                    bufferOffset: UInt32(offset), final: last || offset + count == burstEnd,
                    status: last ? SCSIStatus.good : nil, residual: residual)
                send(pdu, status: last)
                offset += count
                dataSN &+= 1
            }
        }
    }
}
