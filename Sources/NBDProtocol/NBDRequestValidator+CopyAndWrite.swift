extension NBDRequestValidator {
    /// NBD_CMD_CAIRN_COPY_AND_WRITE (docs/NBD-EXTENSIONS.md), in this order:
    ///
    /// 1. Without `x-cairn:copy-on-write` selected the command does not exist on this connection: EINVAL,
    ///    as proto.md asks for "an unknown command".
    /// 2. A read-only export: EPERM, as for every write-type command.
    /// 3. The payload: at least its 16 fixed bytes and one byte of buffer, within the maximum payload.
    /// 4. The range, as WRITE and READ are checked: target, source, copy size, buffer offset and buffer
    ///    length aligned to the minimum block size; the target chunk past the end is ENOSPC (a write
    ///    beyond the device), the source chunk past the end EINVAL (a read beyond it); the buffer must
    ///    lie inside the chunk.
    ///
    /// Whether the copy size is the export's copy-on-write chunk size is the export's to decide.
    static func validateCopyAndWrite(_ request: NBDRequest, session: NBDNegotiatedSession) -> NBDRequestRejection? {
        guard session.metaContexts.contains(where: { $0.name == NBDCopyOnWrite.contextName }) else {
            return NBDRequestRejection(.invalid, "\(request.type) needs the \(NBDCopyOnWrite.contextName) context")
        }
        if session.transmissionFlags.contains(.readOnly) {
            return NBDRequestRejection(.permissionDenied, "export is read-only")
        }
        let export = session.export
        if request.length > UInt64(export.blockSizes.maximumPayload) {
            return NBDRequestRejection(
                .invalid, "\(request.type) of \(request.length) bytes exceeds the maximum payload")
        }
        guard case .data(let bytes) = request.payload, let payload = NBDCopyAndWritePayload(decoding: bytes),
            payload.bufferLength > 0
        else {
            return NBDRequestRejection(
                .invalid, "\(request.type) needs a \(NBDCopyOnWrite.payloadHeaderLength)-byte header and a buffer")
        }
        let minimum = UInt64(max(export.blockSizes.minimum, 1))
        let copySize = UInt64(payload.copySize)
        let fields = [request.offset, payload.sourceOffset, copySize, UInt64(payload.bufferOffset)]
        if fields.contains(where: { $0 % minimum != 0 }) || UInt64(payload.bufferLength) % minimum != 0 {
            return NBDRequestRejection(.invalid, "\(request.type) not aligned to \(minimum) bytes")
        }
        guard copySize > 0, UInt64(payload.bufferOffset) + UInt64(payload.bufferLength) <= copySize else {
            return NBDRequestRejection(
                .invalid, "\(request.type) buffer does not fit inside the \(copySize)-byte chunk")
        }
        if Self.exceeds(request.offset, copySize, export.size) {
            return NBDRequestRejection(.noSpace, "\(request.type) target beyond the end of the export")
        }
        if Self.exceeds(payload.sourceOffset, copySize, export.size) {
            return NBDRequestRejection(.invalid, "\(request.type) source beyond the end of the export")
        }
        return nil
    }

    private static func exceeds(_ offset: UInt64, _ length: UInt64, _ size: UInt64) -> Bool {
        let (end, overflow) = offset.addingReportingOverflow(length)
        return overflow || end > size
    }
}
