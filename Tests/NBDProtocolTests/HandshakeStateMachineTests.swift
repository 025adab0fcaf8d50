import NBDProtocol
import Testing

/// An in-memory directory: two exports, one with base:allocation.
struct FakeDirectory: NBDExportDirectory {
    var exports: [NBDExportDescription] = [
        NBDExportDescription(
            name: "disk",
            description: "main disk",
            size: 1 << 30,
            flags: [.hasFlags, .sendFlush, .sendFUA, .sendTrim],
            blockSizes: NBDBlockSizeConstraints(minimum: 512, preferred: 4096, maximumPayload: 1 << 25),
            metaContexts: ["base:allocation", "qemu:dirty-bitmap:b0"]
        ),
        NBDExportDescription(name: "plain", size: 4096, flags: [.readOnly, .sendFastZero]),
        NBDExportDescription(name: "secret", size: 4096, flags: [], requiresTLS: true),
    ]

    func listExports() -> [NBDExportSummary] {
        exports.map { NBDExportSummary(name: $0.name, description: $0.description, requiresTLS: $0.requiresTLS) }
    }

    func describeExport(named name: String) -> NBDExportDescription? {
        exports.first { $0.name == name }
    }
}

@Suite("handshake state machine")
struct HandshakeStateMachineTests {
    typealias Action = NBDHandshakeStateMachine.Action
    let directory = FakeDirectory()

    func negotiating(
        flags: NBDClientFlags = [.fixedNewstyle, .noZeroes],
        configuration: NBDHandshakeConfiguration = .init()
    ) -> NBDHandshakeStateMachine {
        var machine = NBDHandshakeStateMachine(configuration: configuration, directory: directory)
        #expect(machine.start() == .sendGreeting([.fixedNewstyle, .noZeroes]))
        #expect(machine.clientFlagsReceived(flags) == .none)
        return machine
    }

    func replyType(_ action: Action) -> NBDOptionReplyType? {
        guard case .reply(_, let replies) = action else { return nil }
        return replies.last?.type
    }

    func isClose(_ action: Action) -> Bool {
        if case .close = action { return true }
        return false
    }

    /// GO to `name` and attach successfully; returns the entry.
    func go(
        _ machine: inout NBDHandshakeStateMachine,
        _ name: String,
        requests: [NBDInfoType] = []
    ) -> NBDTransmissionEntry? {
        let action = machine.optionReceived(.go(NBDInfoRequest(exportName: name, requests: requests)))
        guard action == .attach(exportName: name, option: .go) else { return nil }
        guard case .enterTransmission(let entry) = machine.attachSucceeded(directory.describeExport(named: name)!)
        else { return nil }
        return entry
    }

    @Test("unknown client flags close; a second greeting or stray events close")
    func clientFlags() {
        var machine = NBDHandshakeStateMachine(directory: directory)
        _ = machine.start()
        #expect(isClose(machine.clientFlagsReceived(NBDClientFlags(rawValue: 1 << 2))))
        var twice = NBDHandshakeStateMachine(directory: directory)
        _ = twice.start()
        #expect(isClose(twice.start()))
        var early = NBDHandshakeStateMachine(directory: directory)
        #expect(isClose(early.optionReceived(.list)))
        var stray = negotiating()
        #expect(isClose(stray.attachSucceeded(directory.exports[0])))
        var tls = negotiating()
        #expect(isClose(tls.tlsEstablished()))
    }

    @Test("without FIXED_NEWSTYLE only EXPORT_NAME is possible")
    func nonFixedNewstyle() {
        var machine = negotiating(flags: [])
        #expect(isClose(machine.optionReceived(.list)))
        var exportName = negotiating(flags: [])
        #expect(exportName.optionReceived(.exportName("disk")) == .attach(exportName: "disk", option: .exportName))
    }

    @Test("EXPORT_NAME: size, flags and zero padding; unknown or refused export closes")
    func exportName() {
        var machine = negotiating(flags: [.fixedNewstyle])
        #expect(machine.optionReceived(.exportName("disk")) == .attach(exportName: "disk", option: .exportName))
        guard case .enterTransmission(let entry) = machine.attachSucceeded(directory.exports[0]) else {
            Issue.record("no transmission")
            return
        }
        #expect(
            entry.reply
                == .exportName(size: 1 << 30, flags: [.hasFlags, .sendFlush, .sendFUA, .sendTrim], noZeroes: false)
        )
        #expect(entry.session.replyStyle == .simple && machine.isInTransmission)

        var unknown = negotiating()
        #expect(isClose(unknown.optionReceived(.exportName("nope"))))
        var refused = negotiating()
        _ = refused.optionReceived(.exportName("disk"))
        #expect(isClose(refused.attachFailed(.errorPolicy, message: "no")))
        var malformed = negotiating()
        #expect(isClose(malformed.optionReceived(.malformed(.exportName, reason: "bad"))))
        var extended = negotiating()
        _ = extended.optionReceived(.extendedHeaders)
        #expect(
            isClose(extended.optionReceived(.exportName("disk"))),
            "EXPORT_NAME is forbidden after EXTENDED_HEADERS"
        )
    }

    @Test("ABORT: ACK then close, even during shutdown")
    func abort() {
        var machine = negotiating()
        #expect(machine.optionReceived(.abort) == .replyAndClose(.abort, [.ack]))
        var shuttingDown = negotiating()
        shuttingDown.shutdownRequested()
        #expect(shuttingDown.optionReceived(.abort) == .replyAndClose(.abort, [.ack]))
    }

    @Test("LIST: one SERVER per export then ACK; data makes it invalid; TLS-only exports hidden without TLS")
    func list() {
        var machine = negotiating(configuration: .init(tlsMode: .selective))
        #expect(
            machine.optionReceived(.list)
                == .reply(
                    .list,
                    [.server(name: "disk", description: "main disk"), .server(name: "plain", description: nil), .ack]
                )
        )
        #expect(replyType(machine.optionReceived(.malformed(.list, reason: "data"))) == .errorInvalid)
    }

    @Test("INFO: EXPORT always, NAME and DESCRIPTION on request, BLOCK_SIZE always, then ACK; unknown export")
    func info() {
        var machine = negotiating()
        let action = machine.optionReceived(
            .info(NBDInfoRequest(exportName: "disk", requests: [.name, .description, NBDInfoType(rawValue: 77)]))
        )
        let sizes = NBDBlockSizeConstraints(minimum: 512, preferred: 4096, maximumPayload: 1 << 25)
        #expect(
            action
                == .reply(
                    .info,
                    [
                        .info(.export(size: 1 << 30, flags: [.hasFlags, .sendFlush, .sendFUA, .sendTrim])),
                        .info(.name("disk")), .info(.description("main disk")), .info(.blockSize(sizes)), .ack,
                    ]
                )
        )
        let plain = machine.optionReceived(.info(NBDInfoRequest(exportName: "plain", requests: [.description])))
        // No description to give; FAST_ZERO is dropped because WRITE_ZEROES is not advertised.
        #expect(
            plain
                == .reply(
                    .info,
                    [
                        .info(.export(size: 4096, flags: [.hasFlags, .readOnly])), .info(.blockSize(.protocolDefault)),
                        .ack,
                    ]
                )
        )
        #expect(
            replyType(machine.optionReceived(.info(NBDInfoRequest(exportName: "nope", requests: [])))) == .errorUnknown
        )
        #expect(!machine.isInTransmission)
    }

    @Test("GO: INFO replies, ACK and transmission; unknown export and refused attach answer errors")
    func go() {
        var machine = negotiating()
        _ = machine.optionReceived(.structuredReply)
        let entry = go(&machine, "disk", requests: [.blockSize])
        guard case .optionReplies(.go, let replies) = entry?.reply else {
            Issue.record("\(String(describing: entry))")
            return
        }
        #expect(
            replies.first
                == .info(.export(size: 1 << 30, flags: [.hasFlags, .sendFlush, .sendFUA, .sendTrim, .sendDF]))
        )
        #expect(replies.last == .ack)
        #expect(entry?.session.replyStyle == .structured && entry?.session.transmissionFlags.contains(.sendDF) == true)

        var unknown = negotiating()
        #expect(
            replyType(unknown.optionReceived(.go(NBDInfoRequest(exportName: "nope", requests: [])))) == .errorUnknown
        )
        var refused = negotiating()
        _ = refused.optionReceived(.go(NBDInfoRequest(exportName: "disk", requests: [])))
        #expect(
            refused.attachFailed(.errorPolicy, message: "busy") == .reply(.go, [.error(.errorPolicy, message: "busy")])
        )
        #expect(refused.optionReceived(.list) != .none, "negotiation goes on after a failed GO")
    }

    @Test("STRUCTURED_REPLY: ACK once, ERR_INVALID when repeated or with data, EXT_HEADER_REQD after extended headers")
    func structuredReply() {
        var machine = negotiating()
        #expect(machine.optionReceived(.structuredReply) == .reply(.structuredReply, [.ack]))
        #expect(replyType(machine.optionReceived(.structuredReply)) == .errorInvalid)
        #expect(replyType(machine.optionReceived(.malformed(.structuredReply, reason: "data"))) == .errorInvalid)
        var extended = negotiating()
        _ = extended.optionReceived(.extendedHeaders)
        #expect(replyType(extended.optionReceived(.structuredReply)) == .errorExtendedHeaderRequired)
    }

    @Test(
        "EXTENDED_HEADERS: ACK once (implies chunked replies), ERR_INVALID when repeated or with data, UNSUP if disabled"
    )
    func extendedHeaders() {
        var machine = negotiating()
        #expect(machine.optionReceived(.extendedHeaders) == .reply(.extendedHeaders, [.ack]))
        #expect(replyType(machine.optionReceived(.extendedHeaders)) == .errorInvalid)
        #expect(replyType(machine.optionReceived(.malformed(.extendedHeaders, reason: "data"))) == .errorInvalid)
        let entry = go(&machine, "disk")
        #expect(entry?.session.replyStyle == .extended && entry?.session.extendedHeaders == true)
        #expect(entry?.session.transmissionFlags.contains(.sendDF) == true)
        var disabled = negotiating(configuration: .init(allowsExtendedHeaders: false))
        #expect(replyType(disabled.optionReceived(.extendedHeaders)) == .errorUnsupported)
    }

    @Test("LIST_META_CONTEXT: all contexts, namespace wildcard, exact names, unknown omitted")
    func listMetaContext() {
        var machine = negotiating()
        #expect(
            replyType(machine.optionReceived(.listMetaContext(NBDMetaContextRequest(exportName: "disk", queries: []))))
                == .errorInvalid
        )
        _ = machine.optionReceived(.structuredReply)
        func list(_ queries: [String], export: String = "disk") -> Action {
            machine.optionReceived(.listMetaContext(NBDMetaContextRequest(exportName: export, queries: queries)))
        }
        let all: [NBDOptionReply] = [
            .metaContext(id: 0, name: "base:allocation"), .metaContext(id: 0, name: "qemu:dirty-bitmap:b0"), .ack,
        ]
        #expect(list([]) == .reply(.listMetaContext, all))
        #expect(list(["base:"]) == .reply(.listMetaContext, [.metaContext(id: 0, name: "base:allocation"), .ack]))
        #expect(list(["qemu:"]) == .reply(.listMetaContext, [.metaContext(id: 0, name: "qemu:dirty-bitmap:b0"), .ack]))
        #expect(
            list(["base:allocation", "base:nope", "x-other:thing", "nocolon"])
                == .reply(.listMetaContext, [.metaContext(id: 0, name: "base:allocation"), .ack])
        )
        #expect(list(["base:nope"]) == .reply(.listMetaContext, [.ack]))
        #expect(replyType(list([], export: "nope")) == .errorUnknown)
    }

    @Test(
        "SET_META_CONTEXT: needs chunked replies, stable ids, base: ignored, unknown export, reset by failure and by GO elsewhere"
    )
    func setMetaContext() {
        func set(_ machine: inout NBDHandshakeStateMachine, _ queries: [String], export: String = "disk") -> Action {
            machine.optionReceived(.setMetaContext(NBDMetaContextRequest(exportName: export, queries: queries)))
        }
        var simple = negotiating()
        #expect(replyType(set(&simple, ["base:allocation"])) == .errorInvalid)

        var machine = negotiating()
        _ = machine.optionReceived(.structuredReply)
        #expect(
            set(&machine, ["base:", "qemu:dirty-bitmap:b0", "base:allocation", "base:allocation"])
                == .reply(
                    .setMetaContext,
                    [
                        .metaContext(id: 2, name: "qemu:dirty-bitmap:b0"), .metaContext(id: 1, name: "base:allocation"),
                        .ack,
                    ]
                )
        )
        #expect(
            set(&machine, ["base:allocation"])
                == .reply(.setMetaContext, [.metaContext(id: 1, name: "base:allocation"), .ack]),
            "ids are stable"
        )
        let kept = go(&machine, "disk")
        #expect(kept?.session.metaContexts == [NBDSelectedMetaContext(id: 1, name: "base:allocation")])

        var elsewhere = negotiating()
        _ = elsewhere.optionReceived(.structuredReply)
        _ = set(&elsewhere, ["base:allocation"])
        #expect(go(&elsewhere, "plain")?.session.metaContexts == [], "GO to another export drops the selection")

        var failed = negotiating()
        _ = failed.optionReceived(.structuredReply)
        _ = set(&failed, ["base:allocation"])
        #expect(replyType(set(&failed, ["base:allocation"], export: "nope")) == .errorUnknown)
        #expect(go(&failed, "disk")?.session.metaContexts == [], "a failed SET still replaces the selection")

        var malformed = negotiating()
        _ = malformed.optionReceived(.structuredReply)
        _ = set(&malformed, ["base:allocation"])
        #expect(replyType(malformed.optionReceived(.malformed(.setMetaContext, reason: "bad"))) == .errorInvalid)
        #expect(go(&malformed, "disk")?.session.metaContexts == [])
    }

    @Test("unknown options get ERR_UNSUP; malformed ones ERR_INVALID")
    func unknownOptions() {
        var machine = negotiating()
        #expect(replyType(machine.optionReceived(.unknown(.peekExport))) == .errorUnsupported)
        #expect(replyType(machine.optionReceived(.malformed(.go, reason: "short"))) == .errorInvalid)
    }

    @Test("shutdown: every option but ABORT gets ERR_SHUTDOWN; EXPORT_NAME closes")
    func shutdown() {
        var machine = negotiating()
        machine.shutdownRequested()
        for option: NBDOption in [
            .list, .structuredReply, .go(NBDInfoRequest(exportName: "disk", requests: [])),
            .unknown(NBDOptionCode(rawValue: 50)),
        ] {
            #expect(replyType(machine.optionReceived(option)) == .errorShutdown, "\(option)")
        }
        #expect(isClose(machine.optionReceived(.exportName("disk"))))
    }

    @Test("too many options close the connection")
    func optionLimit() {
        var machine = negotiating(configuration: .init(maximumOptionCount: 3))
        for _ in 0..<3 { #expect(replyType(machine.optionReceived(.list)) == .ack) }
        #expect(isClose(machine.optionReceived(.list)))
    }

    @Test("TLS disabled: STARTTLS is ERR_UNSUP")
    func tlsDisabled() {
        var machine = negotiating()
        #expect(replyType(machine.optionReceived(.startTLS)) == .errorUnsupported)
    }

    @Test("TLS required: options get ERR_TLS_REQD, EXPORT_NAME closes, STARTTLS upgrades and resets negotiation")
    func tlsRequired() {
        var machine = negotiating(configuration: .init(tlsMode: .required))
        #expect(replyType(machine.optionReceived(.list)) == .errorTLSRequired)
        #expect(
            replyType(machine.optionReceived(.go(NBDInfoRequest(exportName: "disk", requests: []))))
                == .errorTLSRequired
        )
        #expect(machine.optionReceived(.startTLS) == .startTLS)
        #expect(isClose(machine.optionReceived(.list)), "nothing may arrive before the TLS handshake")

        var upgraded = negotiating(configuration: .init(tlsMode: .required))
        _ = upgraded.optionReceived(.startTLS)
        #expect(upgraded.tlsEstablished() == .none)
        #expect(replyType(upgraded.optionReceived(.startTLS)) == .errorInvalid, "STARTTLS twice")
        #expect(replyType(upgraded.optionReceived(.list)) == .ack)
        #expect(go(&upgraded, "secret") != nil)

        var closes = negotiating(configuration: .init(tlsMode: .required))
        #expect(isClose(closes.optionReceived(.exportName("disk"))))
    }

    @Test("TLS selective: TLS-only exports need the upgrade; state negotiated before STARTTLS is forgotten")
    func tlsSelective() {
        var machine = negotiating(configuration: .init(tlsMode: .selective))
        #expect(
            replyType(machine.optionReceived(.go(NBDInfoRequest(exportName: "secret", requests: []))))
                == .errorTLSRequired
        )
        #expect(
            replyType(
                machine.optionReceived(.listMetaContext(NBDMetaContextRequest(exportName: "secret", queries: [])))
            ) == .errorInvalid
        )
        _ = machine.optionReceived(.structuredReply)
        #expect(
            replyType(
                machine.optionReceived(.listMetaContext(NBDMetaContextRequest(exportName: "secret", queries: [])))
            ) == .errorPolicy
        )
        #expect(isClose(negotiatingSelectiveExportName()))
        #expect(machine.optionReceived(.startTLS) == .startTLS)
        _ = machine.tlsEstablished()
        // Structured replies were negotiated before STARTTLS: they must be negotiated again.
        let entry = go(&machine, "secret")
        #expect(entry?.session.replyStyle == .simple)
    }

    func negotiatingSelectiveExportName() -> Action {
        var machine = negotiating(configuration: .init(tlsMode: .selective))
        return machine.optionReceived(.exportName("secret"))
    }
}
