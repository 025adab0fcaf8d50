import ISCSIProtocol
import Logging
import NIOCore

/// A SCSI command admitted to the session.
struct SCSITask {
    var tag: UInt32
    var immediate: Bool
    /// Expected Data Transfer Length (RFC 7143 §11.3.4): what the initiator's buffer holds.
    var expectedLength: UInt32
    /// The CDB's operation code (metrics).
    var opcode: UInt8 = 0
}

/// A command whose data-out is still arriving (immediate data, unsolicited Data-Out, then R2Ts).
struct PendingWrite {
    var task: SCSITask
    var command: SCSICommand
    var unit: any ISCSILogicalUnit
    /// The unit as the command was checked against when it arrived.
    var profile: SCSIDeviceProfile
    /// Bytes to collect before the command runs: the smaller of the CDB's and the initiator's lengths.
    var needed: UInt32
    var data: ByteBuffer
    /// Unsolicited Data-Out may still come (the command PDU's F bit was clear).
    var unsolicitedOpen: Bool
    /// The R2T outstanding, if any: its transfer tag and where its burst ends.
    var transferTag: UInt32?
    var burstEnd: UInt32 = 0
    var r2tSN: UInt32 = 0
    /// DataSN the next Data-Out must carry: numbered from 0 within each sequence (the unsolicited burst,
    /// then each R2T's), RFC 7143 §11.7.5.
    var expectedDataSN: UInt32 = 0
}

/// Collecting write data (RFC 7143 §4.2.2.2 - §4.2.2.4): immediate data, unsolicited Data-Out up to
/// FirstBurstLength, then one R2T at a time (MaxOutstandingR2T=1) for at most MaxBurstLength each.
extension ISCSIConnectionHandler {
    func beginDataOut(_ pending: PendingWrite, parameters: ISCSISessionParameters) {
        var pending = pending
        if !pending.unsolicitedOpen && pending.data.readableBytes >= pending.needed {
            run(pending.task, pending.command, unit: pending.unit, profile: pending.profile, data: pending.data)
            return
        }
        if !pending.unsolicitedOpen { requestData(&pending, parameters: parameters) }
        pendingWrites[pending.task.tag] = pending
    }

    /// Sends the R2T for the next burst.
    func requestData(_ pending: inout PendingWrite, parameters: ISCSISessionParameters) {
        let offset = UInt32(pending.data.readableBytes)
        let length = min(pending.needed - offset, parameters.maxBurstLength)
        let tag = nextTransferTag
        nextTransferTag = nextTransferTag &+ 1
        if nextTransferTag == ISCSIPDU.reservedTag { nextTransferTag = 1 }
        pending.transferTag = tag
        pending.burstEnd = offset + length
        pending.expectedDataSN = 0
        send(
            .readyToTransfer(
                taskTag: pending.task.tag, logicalUnit: 0, transferTag: tag, r2tSN: pending.r2tSN, bufferOffset: offset,
                length: length),
            status: false)
        pending.r2tSN &+= 1
    }

    func handleDataOut(_ pdu: ISCSIPDU) {
        // Data for a task that was aborted or already refused is dropped (RFC 7143 §4.2.2.2 lets the
        // target discard it).
        guard var pending = pendingWrites[pdu.initiatorTaskTag], let parameters else { return }
        let solicited = pdu.targetTransferTag != ISCSIPDU.reservedTag
        let offset = pdu.uint32(40)
        let total = UInt64(pending.data.readableBytes) + UInt64(pdu.data.readableBytes)
        // DataPDUInOrder=Yes: each PDU starts where the previous ended, within what was asked for.
        let inOrder = offset == UInt32(pending.data.readableBytes)
        let asked = solicited ? (pdu.targetTransferTag == pending.transferTag && total <= UInt64(pending.burstEnd))
            : (pending.unsolicitedOpen && total <= UInt64(max(parameters.firstBurstLength, pending.task.expectedLength)))
        let numbered = pdu.uint32(36) == pending.expectedDataSN
        guard inOrder, asked, numbered, total <= UInt64(pending.task.expectedLength) else {
            pendingWrites.removeValue(forKey: pending.task.tag)
            send(.reject(.protocolError, rejected: pdu.header), status: false)
            complete(pending.task, .sense(.dataPhaseError))
            return
        }
        var data = pdu.data
        pending.data.writeBuffer(&data)
        pending.expectedDataSN &+= 1
        guard pdu.isFinal else {
            pendingWrites[pending.task.tag] = pending
            return
        }
        if solicited { pending.transferTag = nil } else { pending.unsolicitedOpen = false }
        if pending.data.readableBytes >= pending.needed {
            pendingWrites.removeValue(forKey: pending.task.tag)
            run(pending.task, pending.command, unit: pending.unit, profile: pending.profile, data: pending.data)
        } else {
            if pending.transferTag == nil && !pending.unsolicitedOpen { requestData(&pending, parameters: parameters) }
            pendingWrites[pending.task.tag] = pending
        }
    }
}
