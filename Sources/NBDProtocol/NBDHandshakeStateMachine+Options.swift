extension NBDHandshakeStateMachine {
    /// One option arrived. The client waits for the final reply before sending another, so exactly one
    /// option is ever being handled.
    public mutating func optionReceived(_ option: NBDOption) -> Action {
        guard state == .negotiating else { return closeNow("\(option.code) while not negotiating") }
        optionCount += 1
        guard optionCount <= configuration.maximumOptionCount else {
            // proto.md lets a server hang up on a client whose behaviour "constitutes a denial of service".
            return closeNow("more than \(configuration.maximumOptionCount) options")
        }
        // Without NBD_FLAG_C_FIXED_NEWSTYLE only EXPORT_NAME exists and options cannot be answered.
        guard clientFlags.contains(.fixedNewstyle) || option.code == .exportName else {
            return closeNow("\(option.code) from a client that did not negotiate fixed newstyle")
        }
        if case .abort = option {
            state = .closed
            return .replyAndClose(.abort, [.ack])
        }
        if shuttingDown {
            if option.code == .exportName { return closeNow("EXPORT_NAME during shutdown") }
            return .reply(option.code, [.error(.errorShutdown, message: "server is shutting down")])
        }
        if configuration.tlsMode == .required, !tlsActive, option.code != .startTLS {
            if option.code == .exportName { return closeNow("EXPORT_NAME before the required TLS upgrade") }
            return .reply(option.code, [.error(.errorTLSRequired, message: "TLS is required")])
        }
        return dispatch(option)
    }

    private mutating func dispatch(_ option: NBDOption) -> Action {
        switch option {
        case .exportName(let name):
            return exportName(name)
        case .abort:
            preconditionFailure("handled before dispatch")
        case .list:
            return list()
        case .startTLS:
            return startTLS()
        case .info(let request):
            return info(request, option: .info)
        case .go(let request):
            return info(request, option: .go)
        case .structuredReply:
            return structuredReply()
        case .extendedHeaders:
            return extendedHeaders()
        case .listMetaContext(let request):
            return listMetaContext(request)
        case .setMetaContext(let request):
            return setMetaContext(request)
        case .unknown(let code):
            return .reply(code, [.error(.errorUnsupported, message: "\(code) is not supported")])
        case .malformed(let code, let reason):
            if code == .exportName { return closeNow("malformed EXPORT_NAME: \(reason)") }
            // "Issuing this command replaces all previously-set metadata contexts (including when this
            // command fails)".
            if code == .setMetaContext { resetMetaContexts() }
            return .reply(code, [.error(.errorInvalid, message: reason)])
        }
    }

    private mutating func exportName(_ name: String) -> Action {
        // proto.md NBD_OPT_EXTENDED_HEADERS: "a client MUST NOT use NBD_OPT_EXPORT_NAME" afterwards.
        guard !negotiated.extendedHeaders else { return closeNow("EXPORT_NAME after EXTENDED_HEADERS") }
        guard let export = directory.describeExport(named: name) else {
            return closeNow("EXPORT_NAME for unknown export \"\(name)\"")
        }
        if export.requiresTLS, !tlsActive { return closeNow("EXPORT_NAME for TLS-only export \"\(name)\"") }
        state = .awaitingAttach(PendingAttach(option: .exportName, requestedName: name, infoRequests: []))
        return .attach(exportName: name, option: .exportName)
    }

    private func list() -> Action {
        let exports = directory.listExports().filter { tlsActive || !$0.requiresTLS }
        let replies = exports.map { NBDOptionReply.server(name: $0.name, description: $0.description) }
        return .reply(.list, replies + [.ack])
    }

    private mutating func startTLS() -> Action {
        if configuration.tlsMode == .disabled {
            return .reply(.startTLS, [.error(.errorUnsupported, message: "TLS is not configured")])
        }
        if tlsActive {
            return .reply(.startTLS, [.error(.errorInvalid, message: "TLS is already active")])
        }
        state = .awaitingTLS
        return .startTLS
    }

    private mutating func info(_ request: NBDInfoRequest, option: NBDOptionCode) -> Action {
        guard let export = directory.describeExport(named: request.exportName) else {
            return .reply(option, [.error(.errorUnknown, message: "no export named \"\(request.exportName)\"")])
        }
        if export.requiresTLS, !tlsActive {
            return .reply(option, [.error(.errorTLSRequired, message: "export requires TLS")])
        }
        if option == .info {
            return .reply(.info, infoReplies(for: export, requests: request.requests) + [.ack])
        }
        state = .awaitingAttach(
            PendingAttach(option: .go, requestedName: request.exportName, infoRequests: request.requests)
        )
        return .attach(exportName: request.exportName, option: .go)
    }

    /// NBD_INFO_EXPORT always (mandatory); NAME and DESCRIPTION when asked; BLOCK_SIZE always, which
    /// proto.md allows ("The server MAY send information requests back which are not explicitly
    /// requested") and which qemu and libnbd ask for anyway.
    func infoReplies(for export: NBDExportDescription, requests: [NBDInfoType]) -> [NBDOptionReply] {
        var replies: [NBDOptionReply] = [.info(.export(size: export.size, flags: transmissionFlags(for: export)))]
        if requests.contains(.name) { replies.append(.info(.name(export.name))) }
        if requests.contains(.description), let text = export.description {
            replies.append(.info(.description(text)))
        }
        replies.append(.info(.blockSize(export.blockSizes)))
        return replies
    }

    private mutating func structuredReply() -> Action {
        if negotiated.extendedHeaders {
            return .reply(
                .structuredReply,
                [.error(.errorExtendedHeaderRequired, message: "extended headers already negotiated")]
            )
        }
        // proto.md: "The client SHOULD NOT send such messages more than once; if it does, the server MAY
        // fail the repeated message with NBD_REP_ERR_INVALID."
        if negotiated.structuredReplies {
            return .reply(.structuredReply, [.error(.errorInvalid, message: "structured replies already negotiated")])
        }
        negotiated.structuredReplies = true
        return .reply(.structuredReply, [.ack])
    }

    private mutating func extendedHeaders() -> Action {
        guard configuration.allowsExtendedHeaders else {
            return .reply(.extendedHeaders, [.error(.errorUnsupported, message: "extended headers are disabled")])
        }
        if negotiated.extendedHeaders {
            return .reply(.extendedHeaders, [.error(.errorInvalid, message: "extended headers already negotiated")])
        }
        negotiated.extendedHeaders = true
        return .reply(.extendedHeaders, [.ack])
    }
}
