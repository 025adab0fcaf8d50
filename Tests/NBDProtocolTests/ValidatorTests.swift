import NBDProtocol
import NIOCore
import Testing

/// One test per branch of NBDRequestValidator, each citing the proto.md SHOULD it follows.
@Suite("request validator")
struct ValidatorTests {
    static func session(
        flags: NBDTransmissionFlags = [
            .hasFlags, .sendFlush, .sendFUA, .sendTrim, .sendWriteZeroes, .sendFastZero, .sendCache, .sendDF,
        ],
        style: NBDReplyStyle = .structured,
        contexts: [NBDSelectedMetaContext] = [NBDSelectedMetaContext(id: 1, name: "base:allocation")],
        minimum: UInt32 = 512,
        maximumPayload: UInt32 = 1 << 20
    ) -> NBDNegotiatedSession {
        let export = NBDExportDescription(
            name: "disk",
            size: 1 << 24,
            flags: flags,
            blockSizes: NBDBlockSizeConstraints(minimum: minimum, preferred: 4096, maximumPayload: maximumPayload),
            metaContexts: ["base:allocation"]
        )
        return NBDNegotiatedSession(export: export, transmissionFlags: flags, replyStyle: style, metaContexts: contexts)
    }

    func error(
        _ type: NBDCommandType,
        flags: NBDCommandFlags = [],
        offset: UInt64 = 0,
        length: UInt64 = 4096,
        payload: NBDRequestPayload? = nil,
        extended: Bool = false,
        session: NBDNegotiatedSession = ValidatorTests.session()
    ) -> NBDWireError? {
        let payload = payload ?? (type == .write ? .data(ByteBuffer(repeating: 0, count: Int(length))) : .none)
        let request = NBDRequest(
            flags: flags,
            type: type,
            cookie: 1,
            offset: offset,
            length: length,
            payload: payload,
            isExtended: extended
        )
        return NBDRequestValidator.validate(request, session: session)?.error
    }

    @Test("valid requests of every command pass")
    func valid() {
        for type: NBDCommandType in [.read, .write, .trim, .writeZeroes, .cache, .blockStatus] {
            #expect(error(type) == nil, "\(type)")
        }
        #expect(error(.flush, length: 0) == nil)
        #expect(error(.writeZeroes, flags: [.noHole, .fastZero, .fua]) == nil)
        #expect(error(.read, flags: .dontFragment) == nil)
        #expect(error(.blockStatus, flags: .requestOne) == nil)
        #expect(error(.write, flags: .payloadLength, extended: true) == nil)
        // Commands without a payload may exceed the maximum payload.
        #expect(
            error(.trim, length: 8 << 20) == nil && error(.writeZeroes, length: 8 << 20) == nil
                && error(.blockStatus, length: 8 << 20) == nil
        )
    }

    @Test("unknown commands, including RESIZE: EINVAL (\"SHOULD return NBD_EINVAL if it receives an unknown command\")")
    func unknownCommand() {
        #expect(error(NBDCommandType(rawValue: 42)) == .invalid)
        #expect(error(.resize) == .invalid)
    }

    @Test("unknown flags and flags not documented for the command: EINVAL")
    func flags() {
        #expect(error(.read, flags: NBDCommandFlags(rawValue: 1 << 9)) == .invalid)
        #expect(error(.write, flags: .noHole) == .invalid)
        #expect(error(.write, flags: .dontFragment) == .invalid)
        #expect(error(.read, flags: .requestOne) == .invalid)
        #expect(error(.trim, flags: .fastZero) == .invalid)
        #expect(error(.read, flags: .payloadLength, extended: true) == .invalid, "payload on a command that takes none")
        #expect(
            error(.write, flags: .payloadLength, extended: false) == .invalid,
            "PAYLOAD_LEN without extended headers"
        )
    }

    @Test("flags whose feature was not advertised: FUA, DF without structured replies, FAST_ZERO")
    func unadvertisedFlags() {
        #expect(error(.write, flags: .fua, session: Self.session(flags: [.hasFlags])) == .invalid)
        #expect(error(.read, flags: .fua) == nil, "FUA is valid on every command once advertised")
        #expect(
            error(.read, flags: .dontFragment, session: Self.session(flags: [.hasFlags], style: .simple)) == .invalid
        )
        #expect(
            error(.writeZeroes, flags: .fastZero, session: Self.session(flags: [.hasFlags, .sendWriteZeroes]))
                == .invalid
        )
    }

    @Test("read-only: WRITE, TRIM, WRITE_ZEROES get EPERM (\"SHOULD return NBD_EPERM\")")
    func readOnly() {
        let session = Self.session(flags: [.hasFlags, .readOnly])
        for type: NBDCommandType in [.write, .trim, .writeZeroes] {
            #expect(error(type, session: session) == .permissionDenied, "\(type)")
        }
        #expect(error(.read, session: session) == nil)
    }

    @Test("commands not advertised: FLUSH, TRIM, WRITE_ZEROES, CACHE get EINVAL; BLOCK_STATUS needs a context")
    func unadvertisedCommands() {
        let bare = Self.session(flags: [.hasFlags])
        for type: NBDCommandType in [.flush, .trim, .writeZeroes, .cache] {
            #expect(error(type, length: type == .flush ? 0 : 4096, session: bare) == .invalid, "\(type)")
        }
        // "Servers SHOULD reply with NBD_EINVAL to clients sending NBD_CMD_BLOCK_STATUS without selecting at
        // least one metadata context."
        #expect(error(.blockStatus, session: Self.session(contexts: [])) == .invalid)
    }

    @Test("FLUSH with a nonzero offset or length: EINVAL (\"MUST be set to all-zero\")")
    func flush() {
        #expect(error(.flush, offset: 512, length: 0) == .invalid)
        #expect(error(.flush, length: 512) == .invalid)
    }

    @Test("past the end: ENOSPC for WRITE and WRITE_ZEROES, EINVAL for READ, TRIM, CACHE, BLOCK_STATUS")
    func bounds() {
        let end: UInt64 = 1 << 24
        // "SHOULD return NBD_ENOSPC if it receives a write request including one or more sectors beyond the
        // size of the device ... SHOULD return NBD_EINVAL if it receives a read or trim request" beyond it.
        #expect(error(.write, offset: end - 512, length: 1024) == .noSpace)
        #expect(error(.writeZeroes, offset: end, length: 512) == .noSpace)
        for type: NBDCommandType in [.read, .trim, .cache, .blockStatus] {
            #expect(error(type, offset: end - 512, length: 1024) == .invalid, "\(type)")
        }
        #expect(
            error(.trim, offset: UInt64.max - 511, length: 1024, extended: true) == .invalid,
            "overflowing offset + length"
        )
        #expect(error(.read, offset: end - 512, length: 512) == nil, "the last block is fine")
    }

    @Test("misaligned offset or length: EINVAL (\"SHOULD report an NBD_EINVAL error if ... not aligned\")")
    func alignment() {
        #expect(error(.read, offset: 256, length: 512) == .invalid)
        #expect(error(.write, offset: 0, length: 100) == .invalid)
        #expect(error(.trim, offset: 1, length: 512) == .invalid)
        #expect(error(.read, offset: 3, length: 5, session: Self.session(minimum: 1)) == nil)
    }

    @Test("over the maximum payload: READ gets EOVERFLOW, WRITE EINVAL; discarded payloads EINVAL")
    func payloadSize() {
        #expect(error(.read, length: 2 << 20) == .overflow)
        #expect(error(.write, length: 2 << 20) == .invalid)
        #expect(error(.write, length: 40 << 20, payload: .discarded(length: 40 << 20)) == .invalid)
    }

    @Test(
        "zero lengths: no-ops except BLOCK_STATUS, which gets EINVAL (spec: behaviour unspecified, SHOULD NOT disconnect)"
    )
    func zeroLength() {
        for type: NBDCommandType in [.read, .write, .trim, .writeZeroes, .cache] {
            #expect(error(type, length: 0) == nil, "\(type)")
        }
        #expect(error(.blockStatus, length: 0) == .invalid)
    }
}

@Suite("transmission state machine")
struct TransmissionStateMachineTests {
    func request(_ type: NBDCommandType, cookie: UInt64 = 1, length: UInt64 = 4096) -> NBDRequest {
        let payload: NBDRequestPayload = type == .write ? .data(ByteBuffer(repeating: 0, count: Int(length))) : .none
        return NBDRequest(flags: [], type: type, cookie: cookie, offset: 0, length: length, payload: payload)
    }

    func ticket(_ action: NBDTransmissionStateMachine.RequestAction) -> NBDTransmissionStateMachine.Ticket? {
        switch action {
        case .execute(_, let ticket), .reject(_, _, let ticket): ticket
        default: nil
        }
    }

    @Test("requests and bytes in flight stop admission at the limits and resume when replies are written")
    func limits() {
        var machine = NBDTransmissionStateMachine(
            session: ValidatorTests.session(),
            limits: .init(maximumRequestsInFlight: 2, maximumBytesInFlight: 8192)
        )
        let first = ticket(machine.requestReceived(request(.read)))
        #expect(machine.canAcceptRequest && machine.bytesInFlight == 4096)
        let second = ticket(machine.requestReceived(request(.write, cookie: 2)))
        #expect(!machine.canAcceptRequest, "two requests in flight")
        #expect(machine.requestFinished(first!) == false)
        #expect(machine.canAcceptRequest)
        let third = ticket(machine.requestReceived(request(.read, cookie: 3, length: 8192)))
        #expect(!machine.canAcceptRequest && machine.bytesInFlight == 4096 + 8192)
        _ = machine.requestFinished(second!)
        #expect(!machine.canAcceptRequest, "still over the byte limit")
        _ = machine.requestFinished(third!)
        #expect(machine.canAcceptRequest && machine.requestsInFlight == 0 && machine.bytesInFlight == 0)
    }

    @Test("invalid requests are rejected with their error and still hold a slot until answered")
    func rejection() {
        var machine = NBDTransmissionStateMachine(session: ValidatorTests.session())
        guard case .reject(_, let rejection, let ticket) = machine.requestReceived(request(.read, length: 100)) else {
            Issue.record("not rejected")
            return
        }
        #expect(rejection.error == .invalid && machine.requestsInFlight == 1 && ticket.bytes == 0)
    }

    @Test("DISC: close at once when idle, or after the last reply; later requests are ignored")
    func disconnect() {
        var idle = NBDTransmissionStateMachine(session: ValidatorTests.session())
        guard case .disconnect(closeNow: true) = idle.requestReceived(request(.disconnect, length: 0)) else {
            Issue.record("idle DISC")
            return
        }
        var busy = NBDTransmissionStateMachine(session: ValidatorTests.session())
        let running = ticket(busy.requestReceived(request(.read)))!
        guard case .disconnect(closeNow: false) = busy.requestReceived(request(.disconnect, length: 0)) else {
            Issue.record("busy DISC")
            return
        }
        #expect(!busy.canAcceptRequest)
        guard case .ignore = busy.requestReceived(request(.read)) else {
            Issue.record("request after DISC")
            return
        }
        #expect(busy.requestFinished(running) == true)
    }

    @Test("shutdown: running requests finish, new ones get ESHUTDOWN, then close")
    func shutdown() {
        var machine = NBDTransmissionStateMachine(session: ValidatorTests.session())
        let running = ticket(machine.requestReceived(request(.read)))!
        #expect(machine.shutdownRequested() == false)
        guard case .reject(_, let rejection, let refused) = machine.requestReceived(request(.read, cookie: 2)) else {
            Issue.record("not refused")
            return
        }
        #expect(rejection.error == .shutdown)
        #expect(machine.requestFinished(refused) == false)
        #expect(machine.requestFinished(running) == true)
        var idle = NBDTransmissionStateMachine(session: ValidatorTests.session())
        #expect(idle.shutdownRequested() == true)
    }
}

@Suite("block status shaper")
struct BlockStatusShaperTests {
    func d(_ length: UInt64, _ flags: UInt32) -> NBDBlockDescriptor { NBDBlockDescriptor(length: length, flags: flags) }

    @Test("clips to the request, drops empty extents, merges equal neighbours")
    func shape() {
        let extents = [d(0, 1), d(512, 3), d(512, 3), d(1024, 0), d(4096, 3)]
        #expect(
            NBDBlockStatusShaper.descriptors(from: extents, requestLength: 1536, requestOne: false) == [
                d(1024, 3), d(512, 0),
            ]
        )
        #expect(
            NBDBlockStatusShaper.descriptors(from: extents, requestLength: 1 << 20, requestOne: false) == [
                d(1024, 3), d(1024, 0), d(4096, 3),
            ]
        )
    }

    @Test("REQ_ONE: exactly one descriptor, no longer than the request")
    func requestOne() {
        #expect(
            NBDBlockStatusShaper.descriptors(from: [d(8192, 0), d(512, 3)], requestLength: 4096, requestOne: true) == [
                d(4096, 0)
            ]
        )
    }

    @Test("nothing usable: nil")
    func empty() {
        #expect(NBDBlockStatusShaper.descriptors(from: [], requestLength: 4096, requestOne: false) == nil)
        #expect(NBDBlockStatusShaper.descriptors(from: [d(0, 1)], requestLength: 4096, requestOne: false) == nil)
    }
}
