import NIOCore

/// SCSI status bytes (SAM-5 §5.3.1).
public enum SCSIStatus {
    public static let good: UInt8 = 0x00
    public static let checkCondition: UInt8 = 0x02
    public static let busy: UInt8 = 0x08
    /// Another I_T nexus holds a reservation that excludes this command (SPC-4 §5.13); no sense data.
    public static let reservationConflict: UInt8 = 0x18
    public static let taskSetFull: UInt8 = 0x28
}

/// Why a command failed, as fixed-format sense data (SPC-4 §4.5.3): a sense key and an additional sense
/// code and qualifier. Thrown by CDB parsing and command execution, sent with CHECK CONDITION.
public struct SCSISense: Error, Sendable, Equatable {
    public var key: UInt8
    public var code: UInt8
    public var qualifier: UInt8
    /// The INFORMATION field (SBC-4: the offset of the first miscompared byte for MISCOMPARE).
    public var information: UInt32?
    /// The CDB byte (and bit) at fault, sent as sense-key specific data (SPC-4 §4.5.2.4.2). Initiators
    /// read an INVALID FIELD IN CDB of a MAINTENANCE IN without one, or pointing at the service action,
    /// as "command not supported" rather than as a refused field.
    public var fieldPointer: (byte: UInt16, bit: UInt8?)?

    public init(key: UInt8, code: UInt8, qualifier: UInt8 = 0, information: UInt32? = nil) {
        self.key = key
        self.code = code
        self.qualifier = qualifier
        self.information = information
    }

    public static func == (lhs: SCSISense, rhs: SCSISense) -> Bool {
        lhs.key == rhs.key && lhs.code == rhs.code && lhs.qualifier == rhs.qualifier
            && lhs.information == rhs.information && lhs.fieldPointer?.byte == rhs.fieldPointer?.byte
            && lhs.fieldPointer?.bit == rhs.fieldPointer?.bit
    }

    /// INVALID FIELD IN CDB pointing at `byte` (and the most significant wrong `bit` of it, if given).
    public static func invalidFieldInCDB(byte: UInt16, bit: UInt8? = nil) -> SCSISense {
        var sense = invalidFieldInCDB
        sense.fieldPointer = (byte, bit)
        return sense
    }

    // Sense keys (SPC-4 Table 48).
    public static let keyNotReady: UInt8 = 0x02
    public static let keyMediumError: UInt8 = 0x03
    public static let keyHardwareError: UInt8 = 0x04
    public static let keyIllegalRequest: UInt8 = 0x05
    public static let keyUnitAttention: UInt8 = 0x06
    public static let keyDataProtect: UInt8 = 0x07
    public static let keyCopyAborted: UInt8 = 0x0A
    public static let keyAbortedCommand: UInt8 = 0x0B
    public static let keyMiscompare: UInt8 = 0x0E

    // The refusals this target uses (SPC-4 Table 49).
    public static let invalidOperationCode = SCSISense(key: keyIllegalRequest, code: 0x20)
    public static let lbaOutOfRange = SCSISense(key: keyIllegalRequest, code: 0x21)
    public static let invalidFieldInCDB = SCSISense(key: keyIllegalRequest, code: 0x24)
    public static let logicalUnitNotSupported = SCSISense(key: keyIllegalRequest, code: 0x25)
    public static let invalidFieldInParameterList = SCSISense(key: keyIllegalRequest, code: 0x26)
    public static let parameterListLengthError = SCSISense(key: keyIllegalRequest, code: 0x1A)
    public static let savingParametersNotSupported = SCSISense(key: keyIllegalRequest, code: 0x39)
    public static let writeProtected = SCSISense(key: keyDataProtect, code: 0x27)
    public static let spaceAllocationFailed = SCSISense(key: keyDataProtect, code: 0x27, qualifier: 0x07)
    public static let writeError = SCSISense(key: keyMediumError, code: 0x0C)
    public static let unrecoveredReadError = SCSISense(key: keyMediumError, code: 0x11)
    public static let internalTargetFailure = SCSISense(key: keyHardwareError, code: 0x44)
    // PERSISTENT RESERVE OUT refusals (SPC-4 §5.13.11.2, §6.16.2).
    public static let invalidReleaseOfPersistentReservation = SCSISense(
        key: keyIllegalRequest, code: 0x26, qualifier: 0x04)
    public static let insufficientRegistrationResources = SCSISense(key: keyIllegalRequest, code: 0x55, qualifier: 0x04)
    // EXTENDED COPY refusals (SPC-4 §6.4, Table 49).
    public static let tooManyTargetDescriptors = SCSISense(key: keyIllegalRequest, code: 0x26, qualifier: 0x06)
    public static let unsupportedTargetDescriptorType = SCSISense(key: keyIllegalRequest, code: 0x26, qualifier: 0x07)
    public static let tooManySegmentDescriptors = SCSISense(key: keyIllegalRequest, code: 0x26, qualifier: 0x08)
    public static let unsupportedSegmentDescriptorType = SCSISense(key: keyIllegalRequest, code: 0x26, qualifier: 0x09)
    /// A segment names a copy target this target cannot reach: an index past the list, or a designator
    /// that is no logical unit this initiator may use (COPY TARGET DEVICE NOT REACHABLE).
    public static let copyTargetNotReachable = SCSISense(key: keyCopyAborted, code: 0x0D, qualifier: 0x02)
    /// A segment failed while being processed (a range past a unit's end): COPY ABORTED without a more
    /// specific code, as Linux's LIO and libiscsi's conformance suite have it.
    public static let copyAborted = SCSISense(key: keyCopyAborted, code: 0x00)
    /// The target is shutting down or its I/O queue is full: the initiator may retry.
    public static let notReadyInProgress = SCSISense(key: keyNotReady, code: 0x04, qualifier: 0x01)
    /// A write's data did not arrive as the command said (SPC-4: DATA PHASE ERROR is 4B/00).
    public static let dataPhaseError = SCSISense(key: keyAbortedCommand, code: 0x4B)
    /// COMPARE AND WRITE found different data (SBC-4 §5.2: MISCOMPARE DURING VERIFY OPERATION).
    public static func miscompare(at offset: UInt32) -> SCSISense {
        SCSISense(key: keyMiscompare, code: 0x1D, information: offset)
    }

    /// Fixed-format sense data, 18 bytes.
    public var fixedFormat: ByteBuffer {
        var buffer = ByteBuffer()
        buffer.writeInteger(UInt8(information == nil ? 0x70 : 0xF0))  // Current error; VALID with INFORMATION.
        buffer.writeInteger(UInt8(0))
        buffer.writeInteger(key)
        buffer.writeInteger(information ?? 0)
        buffer.writeInteger(UInt8(10))  // Additional sense length: bytes 8..17.
        buffer.writeInteger(UInt32(0))
        buffer.writeInteger(code)
        buffer.writeInteger(qualifier)
        buffer.writeInteger(UInt8(0))  // Field replaceable unit code.
        if let (byte, bit) = fieldPointer {
            // SKSV, C/D (the field is in the CDB), BPV and the bit pointer; then the byte.
            buffer.writeInteger(UInt8(0xC0 | (bit.map { 0x08 | ($0 & 0x07) } ?? 0)))
            buffer.writeInteger(byte)
        } else {
            buffer.writeRepeatingByte(0, count: 3)
        }
        return buffer
    }
}
