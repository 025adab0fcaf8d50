import NIOCore

extension ByteBuffer {
    /// Writes the complete reply to a request that returns no data: success, or one error.
    ///
    /// - Simple replies: the simple reply with the error field.
    /// - Structured replies: a simple reply on success (proto.md: one "MAY be used as a reply to any
    ///   request other than NBD_CMD_READ, but only if the reply has no data payload"), an ERROR chunk on
    ///   failure ("The server SHOULD prefer sending errors via a structured reply"). A READ always gets
    ///   chunks ("MUST NOT use a simple reply for NBD_CMD_READ").
    /// - Extended headers: a NONE or ERROR chunk ("If extended headers have been negotiated, a simple
    ///   reply MUST NOT be used").
    @discardableResult
    public mutating func writeNBDCompletion(
        _ rejection: NBDRequestRejection?,
        for request: NBDRequest,
        style: NBDReplyStyle
    ) -> Int {
        let chunked = style == .extended || (style == .structured && (rejection != nil || request.type == .read))
        guard chunked else { return writeNBDSimpleReply(error: rejection?.error, cookie: request.cookie) }
        let chunk: NBDReplyChunk = rejection.map { .error($0.error, message: $0.message) } ?? .none
        return writeNBDReplyChunk(
            chunk,
            flags: .done,
            cookie: request.cookie,
            requestOffset: request.offset,
            extendedHeaders: style == .extended
        )
    }
}
