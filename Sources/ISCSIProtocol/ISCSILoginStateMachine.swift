import NIOCore

/// The login phase of one connection (RFC 7143 §6.3): Login Requests in, Login Responses out, until the
/// initiator moves to the full feature phase or the login fails. Pure: the handler sends what `receive`
/// returns and asks the target catalog through `targetExists`.
///
/// Operational keys are answered by the RFC's result functions (§6.2.1: OR, AND, smaller, larger) with
/// this target's limits; unknown keys get NotUnderstood; authentication is CHAP (one-way or mutual, with
/// the secrets of `ISCSIChapConfiguration`) or None (+Chap.swift).
public struct ISCSILoginStateMachine: Sendable {
    /// Login status classes and details (RFC 7143 §11.13.5).
    public enum Status: UInt16, Sendable {
        case success = 0x0000
        case initiatorError = 0x0200
        case authenticationFailure = 0x0201
        case authorizationFailure = 0x0202
        case targetNotFound = 0x0203
        case missingParameter = 0x0207
        case unsupportedVersion = 0x0205
        case invalidDuringLogin = 0x020B
        case sessionDoesNotExist = 0x020A
        case targetError = 0x0300
    }

    public enum Action: Sendable, Equatable {
        /// Send this Login Response and wait for the next request.
        case respond(ISCSIPDU)
        /// Send this Login Response (T=1, NSG=3): the session is in full feature phase with `parameters`.
        case complete(ISCSIPDU, ISCSISessionParameters)
        /// Send this Login Response (a failure status) and close the connection.
        case fail(ISCSIPDU, Status)
    }

    /// Stages (RFC 7143 §11.12.3 CSG/NSG).
    public static let securityStage: UInt8 = 0
    public static let operationalStage: UInt8 = 1
    public static let fullFeatureStage: UInt8 = 3

    public internal(set) var parameters = ISCSISessionParameters()
    /// TSIH this target gives the session if the login succeeds.
    let newTSIH: UInt16
    /// Text carried over from requests with the C (continue) bit.
    var pendingText = ByteBuffer()
    var exchanges = 0
    var started = false
    var statSN: UInt32 = 0
    /// Keys of ours already sent (declared once per login).
    var declared: Set<String> = []
    var finished = false
    /// CHAP: who may authenticate, and where this login is in the exchange.
    let chapConfiguration: ISCSIChapConfiguration
    var chap = ChapState.notOffered
    /// The identifier and challenge this target sends (random, from the caller: the machine is pure).
    let chapIdentifier: UInt8
    let chapChallenge: [UInt8]
    /// CHAP keys received in the current request, acted on once all its keys are read.
    var chapKeys: [String: String] = [:]

    public init(
        tsih: UInt16, chap: ISCSIChapConfiguration = .disabled, chapIdentifier: UInt8 = 0, chapChallenge: [UInt8] = []
    ) {
        self.newTSIH = tsih
        self.chapConfiguration = chap
        self.chapIdentifier = chapIdentifier
        self.chapChallenge = chapChallenge
    }

    /// The next Login Request. `targetExists` says whether a TargetName names a target this initiator may
    /// log in to.
    public mutating func receive(_ request: ISCSIPDU, targetExists: (String) -> Bool) -> Action {
        receive(request) { target, _ in targetExists(target) }
    }

    /// The next Login Request; `targetExists` also gets the CHAP name the initiator proved (nil: none),
    /// asked only once authentication is settled.
    public mutating func receive(_ request: ISCSIPDU, targetExists: (String, String?) -> Bool) -> Action {
        exchanges += 1
        let csg = (request.flags >> 2) & 3
        let nsg = request.flags & 3
        var transit = request.flags & 0x80 != 0
        if !started {
            started = true
            statSN = request.expectedStatusSequenceNumber
            parameters.expCmdSN = request.commandSequenceNumber
            parameters.isid = request.uint64(8) >> 16
        }
        guard request.opcode == .loginRequest, !finished else {
            return failure(request, csg: csg, .invalidDuringLogin)
        }
        guard exchanges <= ISCSILimits.maximumLoginExchanges else {
            return failure(request, csg: csg, .initiatorError)
        }
        // Version-max and version-min (bytes 2, 3): version 0 is the only one (RFC 7143 §11.12.4).
        guard request.byte(3) == 0 else {
            return failure(request, csg: csg, .unsupportedVersion)
        }
        // A non-zero TSIH asks to add a connection to an existing session: MaxConnections is 1.
        guard request.uint16(14) == 0 else {
            return failure(request, csg: csg, .sessionDoesNotExist)
        }
        guard csg != 2, csg != Self.fullFeatureStage, !transit || (nsg > csg && nsg != 2) else {
            return failure(request, csg: csg, .initiatorError)
        }
        pendingText.writeImmutableBuffer(request.data)
        guard pendingText.readableBytes <= ISCSILimits.maximumTextLength else {
            return failure(request, csg: csg, .initiatorError)
        }
        if request.flags & 0x40 != 0 {
            // C bit: more text follows; acknowledge with an empty response (RFC 7143 §6.1).
            return .respond(response(to: request, transit: false, csg: csg, nsg: nsg))
        }
        let text = pendingText
        pendingText = ByteBuffer()
        let pairs: [(key: String, value: String)]
        do { pairs = try ISCSITextParameters.parse(text) } catch {
            return failure(request, csg: csg, .initiatorError)
        }
        var answers: [(key: String, value: String)] = []
        chapKeys = [:]
        for (key, value) in pairs {
            let outcome = key.hasPrefix("CHAP_") || key == "AuthMethod"
                ? authenticate(key: key, value: value, stage: csg) : negotiate(key: key, value: value)
            switch outcome {
            case .answer(let answer): answers.append((key, answer))
            case .silent: break
            case .fail(let status): return failure(request, csg: csg, status)
            }
        }
        switch chapStep(stage: csg, leaving: transit && nsg > csg) {
        case .proceed(let chapAnswers): answers += chapAnswers
        case .fail(let status): return failure(request, csg: csg, status)
        }
        // Until CHAP is done the login stays in the security stage (T=0, RFC 7143 §6.3).
        transit = transit && !chap.inProgress
        if parameters.initiatorName.isEmpty {
            return failure(request, csg: csg, .missingParameter)
        }
        if parameters.sessionType == .normal {
            guard let target = parameters.targetName else {
                return failure(request, csg: csg, .missingParameter)
            }
            guard chap.inProgress || targetExists(target, parameters.authenticatedName) else {
                return failure(request, csg: csg, .targetNotFound)
            }
            // RFC 7143 §13.9: the first Login Response of a normal session names the portal group.
            declare("TargetPortalGroupTag", "1", into: &answers)
        }
        if csg == Self.operationalStage || (transit && nsg == Self.fullFeatureStage) {
            declare("MaxRecvDataSegmentLength", String(ISCSILimits.targetMaxRecvDataSegmentLength), into: &answers)
        }
        var reply = response(to: request, transit: transit, csg: csg, nsg: nsg)
        reply.data = ISCSITextParameters.encode(answers)
        if transit && nsg == Self.fullFeatureStage {
            finished = true
            parameters.tsih = newTSIH
            reply.setUInt16(newTSIH, 14)
            parameters.targetMaxRecvDataSegmentLength = ISCSILimits.targetMaxRecvDataSegmentLength
            parameters.statSN = statSN
            if parameters.sessionType == .normal, parameters.initialR2T == false {
                parameters.firstBurstLength = min(parameters.firstBurstLength, parameters.maxBurstLength)
            }
            return .complete(reply, parameters)
        }
        return .respond(reply)
    }

    mutating func declare(_ key: String, _ value: String, into answers: inout [(key: String, value: String)]) {
        guard !declared.contains(key) else { return }
        declared.insert(key)
        answers.append((key, value))
    }

    /// A Login Response to `request` with the next StatSN and the command window.
    mutating func response(to request: ISCSIPDU, transit: Bool, csg: UInt8, nsg: UInt8) -> ISCSIPDU {
        var pdu = ISCSIPDU(opcode: .loginResponse)
        pdu.flags = (transit ? 0x80 : 0) | csg << 2 | (transit ? nsg : 0)
        // Bytes 8..13 echo the ISID; the TSIH is set only on the final response.
        for offset in 8..<14 { pdu.setByte(request.byte(offset), offset) }
        pdu.initiatorTaskTag = request.initiatorTaskTag
        let cmdSN = request.commandSequenceNumber
        pdu.setSequence(statSN: statSN, expCmdSN: cmdSN, maxCmdSN: cmdSN &+ ISCSILimits.commandWindow &- 1)
        statSN &+= 1
        return pdu
    }

    /// A Login Response carrying a failure status; the connection closes after it (RFC 7143 §11.13.5).
    mutating func failure(_ request: ISCSIPDU, csg: UInt8, _ status: Status) -> Action {
        finished = true
        var pdu = response(to: request, transit: false, csg: csg, nsg: 0)
        pdu.setUInt16(status.rawValue, 36)
        return .fail(pdu, status)
    }
}
