import NIOCore

/// The PDUs a target sends (RFC 7143 §11), built with their fields at the RFC's offsets. Sequence
/// numbers (StatSN, ExpCmdSN, MaxCmdSN) are set by the caller with `setSequence`.
extension ISCSIPDU {
    /// The tag meaning "none" (RFC 7143 §11.2.1.8: reserved value 0xffffffff).
    public static let reservedTag: UInt32 = 0xFFFF_FFFF

    /// SCSI Response (§11.4): status, sense data (with its 2-byte length) and the residual.
    public static func scsiResponse(
        taskTag: UInt32, status: UInt8, sense: ByteBuffer? = nil, residual: Residual = .none, expDataSN: UInt32 = 0
    ) -> ISCSIPDU {
        var data = ByteBuffer()
        if let sense {
            data.writeInteger(UInt16(sense.readableBytes))
            data.writeImmutableBuffer(sense)
        }
        var pdu = ISCSIPDU(opcode: .scsiResponse, data: data)
        pdu.flags = 0x80 | residual.flags
        pdu.setByte(0, 2)  // Response: command completed at target.
        pdu.setByte(status, 3)
        pdu.initiatorTaskTag = taskTag
        pdu.setUInt32(expDataSN, 36)
        pdu.setUInt32(residual.count, 44)
        return pdu
    }

    /// Overflow or underflow of the Expected Data Transfer Length (§11.4.5).
    public enum Residual: Sendable, Equatable {
        case none
        case underflow(UInt32)
        case overflow(UInt32)

        var flags: UInt8 {
            switch self {
            case .none: 0
            case .underflow: 0x02
            case .overflow: 0x04
            }
        }

        var count: UInt32 {
            switch self {
            case .none: 0
            case .underflow(let n), .overflow(let n): n
            }
        }

        /// The residual of a command expecting `expected` bytes whose CDB moves `actual`.
        public init(expected: UInt32, actual: UInt64) {
            if actual == UInt64(expected) {
                self = .none
            } else if actual < UInt64(expected) {
                self = .underflow(expected - UInt32(actual))
            } else {
                self = .overflow(UInt32(clamping: actual - UInt64(expected)))
            }
        }
    }

    /// SCSI Data-In (§11.7). `status` set: the last PDU of the command carries its status (S bit).
    public static func dataIn(
        taskTag: UInt32, data: ByteBuffer, dataSN: UInt32, bufferOffset: UInt32, final: Bool,
        status: UInt8? = nil, residual: Residual = .none
    ) -> ISCSIPDU {
        var pdu = ISCSIPDU(opcode: .dataIn, data: data)
        var flags: UInt8 = final ? 0x80 : 0
        if let status {
            flags |= 0x01 | residual.flags
            pdu.setByte(status, 3)
            pdu.setUInt32(residual.count, 44)
        }
        pdu.flags = flags
        pdu.initiatorTaskTag = taskTag
        pdu.setUInt32(reservedTag, 20)
        pdu.setUInt32(dataSN, 36)
        pdu.setUInt32(bufferOffset, 40)
        return pdu
    }

    /// Ready To Transfer (§11.8): asks for `length` bytes at `bufferOffset` of the write `taskTag`.
    public static func readyToTransfer(
        taskTag: UInt32, logicalUnit: UInt64, transferTag: UInt32, r2tSN: UInt32, bufferOffset: UInt32, length: UInt32
    ) -> ISCSIPDU {
        var pdu = ISCSIPDU(opcode: .readyToTransfer)
        pdu.flags = 0x80
        pdu.logicalUnit = logicalUnit
        pdu.initiatorTaskTag = taskTag
        pdu.setUInt32(transferTag, 20)
        pdu.setUInt32(r2tSN, 36)
        pdu.setUInt32(bufferOffset, 40)
        pdu.setUInt32(length, 44)
        return pdu
    }

    /// NOP-In (§11.19): the answer to a NOP-Out with a task tag, echoing its data.
    public static func nopIn(taskTag: UInt32, logicalUnit: UInt64, data: ByteBuffer) -> ISCSIPDU {
        var pdu = ISCSIPDU(opcode: .nopIn, data: data)
        pdu.flags = 0x80
        pdu.logicalUnit = logicalUnit
        pdu.initiatorTaskTag = taskTag
        pdu.setUInt32(reservedTag, 20)
        return pdu
    }

    /// Task Management Function Response (§11.6).
    public static func taskManagementResponse(taskTag: UInt32, response: UInt8) -> ISCSIPDU {
        var pdu = ISCSIPDU(opcode: .taskManagementResponse)
        pdu.flags = 0x80
        pdu.setByte(response, 2)
        pdu.initiatorTaskTag = taskTag
        return pdu
    }

    /// Logout Response (§11.15); Time2Wait and Time2Retain are 0 (no reconnection to wait for).
    public static func logoutResponse(taskTag: UInt32, response: UInt8) -> ISCSIPDU {
        var pdu = ISCSIPDU(opcode: .logoutResponse)
        pdu.flags = 0x80
        pdu.setByte(response, 2)
        pdu.initiatorTaskTag = taskTag
        return pdu
    }

    /// Text Response (§11.11), final: this target's answers always fit one PDU or are cut by the caller.
    public static func textResponse(taskTag: UInt32, logicalUnit: UInt64, final: Bool, transferTag: UInt32, data: ByteBuffer)
        -> ISCSIPDU
    {
        var pdu = ISCSIPDU(opcode: .textResponse, data: data)
        pdu.flags = final ? 0x80 : 0x40
        pdu.logicalUnit = logicalUnit
        pdu.initiatorTaskTag = taskTag
        pdu.setUInt32(transferTag, 20)
        return pdu
    }

    /// Reject (§11.17) of the PDU whose header is `rejected`.
    public static func reject(_ reason: ISCSIRejectReason, rejected: ByteBuffer) -> ISCSIPDU {
        var pdu = ISCSIPDU(opcode: .reject, data: rejected)
        pdu.flags = 0x80
        pdu.setByte(reason.rawValue, 2)
        pdu.initiatorTaskTag = reservedTag
        return pdu
    }
}
