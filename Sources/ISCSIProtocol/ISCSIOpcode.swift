/// PDU opcodes (RFC 7143 §11.2.1.2): the low six bits of byte 0.
public enum ISCSIOpcode: UInt8, Sendable, Hashable {
    // Initiator → target.
    case nopOut = 0x00
    case scsiCommand = 0x01
    case taskManagementRequest = 0x02
    case loginRequest = 0x03
    case textRequest = 0x04
    case dataOut = 0x05
    case logoutRequest = 0x06
    case snackRequest = 0x10
    // Target → initiator.
    case nopIn = 0x20
    case scsiResponse = 0x21
    case taskManagementResponse = 0x22
    case loginResponse = 0x23
    case textResponse = 0x24
    case dataIn = 0x25
    case logoutResponse = 0x26
    case readyToTransfer = 0x31
    case asyncMessage = 0x32
    case reject = 0x3F
}

/// Reject reasons (RFC 7143 §11.17.1).
public enum ISCSIRejectReason: UInt8, Sendable {
    case dataDigestError = 0x02
    case snackReject = 0x03
    case protocolError = 0x04
    case commandNotSupported = 0x05
    case immediateCommandRejected = 0x06
    case taskInProgress = 0x07
    case invalidDataAck = 0x08
    case invalidPDUField = 0x09
    case outOfResources = 0x0A
    case negotiationReset = 0x0B
    case waitingForLogout = 0x0C
}
