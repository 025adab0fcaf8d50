import ISCSIProtocol
import Logging
import NIOCore

/// The full feature phase: NOP, Text (SendTargets), task management and Logout. SCSI commands and their
/// data are in the +Commands and +DataOut files.
extension ISCSIConnectionHandler {
    /// Task management function codes (RFC 7143 §11.5.1) and responses (§11.6.1).
    enum TaskManagement {
        static let abortTask: UInt8 = 1
        static let taskReassign: UInt8 = 8
        static let functionComplete: UInt8 = 0
        static let taskDoesNotExist: UInt8 = 1
        static let lunDoesNotExist: UInt8 = 2
        static let allegianceReassignmentNotSupported: UInt8 = 4
        static let functionNotSupported: UInt8 = 5
    }

    func handleFullFeature(_ pdu: ISCSIPDU) {
        guard let opcode = pdu.opcode else {
            send(.reject(.commandNotSupported, rejected: pdu.header), status: false)
            return
        }
        switch opcode {
        case .dataOut:
            handleDataOut(pdu)
            return
        case .nopOut, .scsiCommand, .taskManagementRequest, .textRequest, .logoutRequest:
            break
        case .snackRequest:
            // SNACK needs ErrorRecoveryLevel 1 or more; this session negotiated 0 (RFC 7143 §11.16).
            send(.reject(.protocolError, rejected: pdu.header), status: false)
            return
        default:
            send(.reject(.protocolError, rejected: pdu.header), status: false)
            return
        }
        // A NOP-Out answering a NOP-In (reserved task tag) takes no CmdSN and gets no answer.
        if opcode == .nopOut, pdu.initiatorTaskTag == ISCSIPDU.reservedTag { return }
        guard window.admit(cmdSN: pdu.commandSequenceNumber, immediate: pdu.isImmediate) == .accept else {
            logger.debug("dropping a command outside the CmdSN window", metadata: ["cmdsn": "\(pdu.commandSequenceNumber)"])
            return
        }
        switch opcode {
        case .nopOut:
            respond(pdu, .nopIn(taskTag: pdu.initiatorTaskTag, logicalUnit: pdu.logicalUnit, data: pdu.data))
        case .textRequest:
            handleText(pdu)
        case .taskManagementRequest:
            handleTaskManagement(pdu)
        case .logoutRequest:
            handleLogout(pdu)
        case .scsiCommand:
            handleSCSICommand(pdu)
        default:
            break
        }
    }

    /// Sends the answer to an admitted request and reopens its slot in the command window.
    func respond(_ request: ISCSIPDU, _ response: ISCSIPDU) {
        if !request.isImmediate { window.finish() }
        send(response)
    }

    /// SendTargets (RFC 7143 Appendix C): every target this initiator may see in a discovery session, the
    /// session's own target in a normal one. Other keys are not understood.
    func handleText(_ pdu: ISCSIPDU) {
        let pairs = (try? ISCSITextParameters.parse(pdu.data)) ?? []
        var answers: [(key: String, value: String)] = []
        for (key, value) in pairs {
            guard key == "SendTargets" else {
                answers.append((key, "NotUnderstood"))
                continue
            }
            let names: [String]
            switch phase {
            case .discovery:
                let all = catalog.targetNames(initiator: initiator)
                names = value == "All" ? all : all.filter { $0 == value }
            case .normal(let parameters, _):
                names = [parameters.targetName ?? ""].filter { value == "All" || value == $0 || value.isEmpty }
            default:
                names = []
            }
            for name in names {
                answers.append(("TargetName", name))
                answers.append(("TargetAddress", "\(portal),1"))
            }
        }
        var data = ISCSITextParameters.encode(answers)
        let limit = Int(parameters?.initiatorMaxRecvDataSegmentLength ?? ISCSILimits.defaultDataSegmentLength)
        if data.readableBytes > limit {
            // Continuation over several Text exchanges is not offered: the list is cut at a whole pair.
            let bytes = Array(data.readableBytesView.prefix(limit))
            let end = (bytes.lastIndex(of: 0) ?? -1) + 1
            data = ByteBuffer(bytes: bytes[0..<end])
        }
        respond(
            pdu,
            .textResponse(
                taskTag: pdu.initiatorTaskTag, logicalUnit: pdu.logicalUnit, final: true,
                transferTag: ISCSIPDU.reservedTag, data: data))
    }

    func handleTaskManagement(_ pdu: ISCSIPDU) {
        let function = pdu.flags & 0x7F
        let response: UInt8
        switch function {
        case TaskManagement.abortTask:
            let referenced = pdu.uint32(20)
            if pendingWrites.removeValue(forKey: referenced) != nil {
                response = TaskManagement.functionComplete
            } else if runningTasks.contains(referenced) {
                // Running in the logical unit: it finishes there, its response is not sent.
                abortedTasks.insert(referenced)
                response = TaskManagement.functionComplete
            } else if ISCSICommandWindow.isAfter(window.expCmdSN, pdu.uint32(32)) {
                // RefCmdSN was received and its task already answered: nothing to abort (RFC 7143 §11.6.1 c).
                response = TaskManagement.taskDoesNotExist
            } else {
                // Not received yet (lost on the way): taken as received, so nothing is left to abort (§11.6.1 b).
                response = TaskManagement.functionComplete
            }
        case 2, 3, 4, 5, 6, 7:
            // ABORT TASK SET, CLEAR ACA, CLEAR TASK SET, LOGICAL UNIT RESET, TARGET WARM/COLD RESET: every
            // task of this session is dropped.
            if function != 3 && function <= 5 && pdu.logicalUnit != 0 {
                response = TaskManagement.lunDoesNotExist
            } else {
                for tag in pendingWrites.keys { finishTask(pendingWrites[tag]!.task) }
                pendingWrites.removeAll()
                abortedTasks.formUnion(runningTasks)
                // LOGICAL UNIT RESET and the target resets end a RESERVE, whoever holds it (SPC-2 §5.5.1);
                // persistent reservations stay.
                if function >= 5, case .normal(_, let unit) = phase {
                    reservations.withUnit(unit.identifier) { $0.reset() }
                    // Every other nexus of the unit learns of the reset from its next command (SAM-5 §7.7;
                    // a target reset resets this target's one unit). The sender knows already.
                    reservations.unitAttentions.establishForAll(
                        function == 5 ? .logicalUnitReset : .targetReset, unit: unit.identifier, except: nexus)
                }
                response = TaskManagement.functionComplete
            }
        case TaskManagement.taskReassign:
            response = TaskManagement.allegianceReassignmentNotSupported
        default:
            response = TaskManagement.functionNotSupported
        }
        respond(pdu, .taskManagementResponse(taskTag: pdu.initiatorTaskTag, response: response))
        if function == 7 {
            // TARGET COLD RESET ends the session (RFC 7143 §11.5.1).
            flush()
            close()
        }
    }

    /// Logout (RFC 7143 §11.14): close the session or connection (the same here), then hang up once the
    /// response is written. Connection recovery (reason 2) needs ErrorRecoveryLevel 2.
    func handleLogout(_ pdu: ISCSIPDU) {
        let reason = pdu.flags & 0x7F
        let response: UInt8 = reason == 2 ? 2 : 0
        respond(pdu, .logoutResponse(taskTag: pdu.initiatorTaskTag, response: response))
        guard response == 0, let context else { return }
        endSession()
        context.writeAndFlush(wrapOutboundOut(ByteBuffer())).assumeIsolated().whenComplete { _ in
            context.close(promise: nil)
        }
    }
}
