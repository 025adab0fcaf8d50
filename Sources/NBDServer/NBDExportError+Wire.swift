import NBDProtocol

extension NBDExportError {
    /// The wire error for this export error in reply to `command` (the only place export errors become
    /// wire values).
    ///
    /// proto.md "Error values": the server "SHOULD NOT return NBD_ENOTSUP except ... WRITE_ZEROES when
    /// NBD_CMD_FLAG_FAST_ZERO is supported" and "SHOULD NOT return NBD_EOVERFLOW except" for commands
    /// without a request payload; elsewhere both become EINVAL, as nbdkit does.
    func wireError(for command: NBDCommandType, flags: NBDCommandFlags) -> NBDWireError {
        switch code {
        case .permissionDenied: .permissionDenied
        case .ioError: .ioError
        case .outOfMemory: .outOfMemory
        case .invalid: .invalid
        case .noSpace: .noSpace
        case .overflow: command == .write || command == .cairnCopyAndWrite ? .invalid : .overflow
        case .notSupported: command == .writeZeroes && flags.contains(.fastZero) ? .notSupported : .invalid
        case .shuttingDown: .shutdown
        }
    }

    /// The option reply for a catalog that refused to attach a session (NBD_OPT_GO).
    var optionReplyType: NBDOptionReplyType {
        switch code {
        case .permissionDenied: .errorPolicy
        case .shuttingDown: .errorShutdown
        // "NBD_REP_ERR_UNKNOWN: The requested export is not available."
        default: .errorUnknown
        }
    }
}

extension NBDRequestRejection {
    /// Wraps an export's failure. Errors that are not `NBDExportError` carry no message to the client:
    /// they may hold local details (paths, errno text) that do not belong on the wire.
    init(exportFailure error: any Error, request: NBDRequest) {
        if let error = error as? NBDExportError {
            self.init(error.wireError(for: request.type, flags: request.flags), error.message)
        } else {
            self.init(.ioError, "internal error")
        }
    }
}
