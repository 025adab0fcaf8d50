/// Negotiation of one key (RFC 7143 §6.2 and §13): the answer this target sends, if any.
extension ISCSILoginStateMachine {
    enum KeyOutcome: Equatable {
        case answer(String)
        case silent
        case fail(Status)
    }

    /// Keys this target answers "Irrelevant" to in a discovery session (RFC 7143 §13: they apply to
    /// normal sessions only).
    static let normalSessionKeys: Set<String> = [
        "InitialR2T", "ImmediateData", "MaxBurstLength", "FirstBurstLength", "MaxOutstandingR2T",
        "DataPDUInOrder", "DataSequenceInOrder",
    ]

    mutating func negotiate(key: String, value: String) -> KeyOutcome {
        if parameters.sessionType == .discovery, Self.normalSessionKeys.contains(key) { return .answer("Irrelevant") }
        switch key {
        case "InitiatorName":
            parameters.initiatorName = value
            return .silent
        case "InitiatorAlias":
            return .silent
        case "TargetName":
            parameters.targetName = value
            return .silent
        case "SessionType":
            guard let type = ISCSISessionParameters.SessionType(rawValue: value) else { return .fail(.initiatorError) }
            parameters.sessionType = type
            return .silent
        case "HeaderDigest", "DataDigest":
            let offered = value.split(separator: ",").map(String.init)
            guard let choice = offered.first(where: { $0 == "None" || $0 == "CRC32C" }) else { return .answer("Reject") }
            if key == "HeaderDigest" { parameters.headerDigest = choice == "CRC32C" } else {
                parameters.dataDigest = choice == "CRC32C"
            }
            return .answer(choice)
        case "MaxRecvDataSegmentLength":
            // Declarative: what this target may send from now on (RFC 7143 §13.12, 512..2^24-1).
            guard let n = UInt32(value), (512...ISCSILimits.maximumDataSegmentLength).contains(n) else {
                return .answer("Reject")
            }
            parameters.initiatorMaxRecvDataSegmentLength = n
            return .silent
        case "MaxBurstLength":
            return smaller(value, limit: ISCSILimits.targetMaxBurstLength, range: 512...ISCSILimits.maximumDataSegmentLength) {
                $0.maxBurstLength = $1
            }
        case "FirstBurstLength":
            return smaller(value, limit: ISCSILimits.targetFirstBurstLength, range: 512...ISCSILimits.maximumDataSegmentLength) {
                $0.firstBurstLength = $1
            }
        case "MaxOutstandingR2T":
            return smaller(value, limit: 1, range: 1...65535) { $0.maxOutstandingR2T = $1 }
        case "ErrorRecoveryLevel":
            return smaller(value, limit: 0, range: 0...2) { _, _ in }
        case "MaxConnections":
            return smaller(value, limit: 1, range: 1...65535) { _, _ in }
        case "DefaultTime2Wait":
            // Larger of the two (RFC 7143 §13.15).
            guard let n = UInt32(value), n <= 3600 else { return .answer("Reject") }
            parameters.defaultTime2Wait = UInt16(max(n, 2))
            return .answer(String(parameters.defaultTime2Wait))
        case "DefaultTime2Retain":
            // Smaller of the two; 0: no connection reinstatement at ErrorRecoveryLevel 0.
            return smaller(value, limit: 0, range: 0...3600) { $0.defaultTime2Retain = UInt16($1) }
        case "InitialR2T":
            // OR: this target says No, so the initiator's value stands.
            guard let yes = boolean(value) else { return .answer("Reject") }
            parameters.initialR2T = yes
            return .answer(yes ? "Yes" : "No")
        case "ImmediateData":
            // AND: this target says Yes, so the initiator's value stands.
            guard let yes = boolean(value) else { return .answer("Reject") }
            parameters.immediateData = yes
            return .answer(yes ? "Yes" : "No")
        case "DataPDUInOrder", "DataSequenceInOrder":
            // OR with this target's Yes: always Yes (data arrives in order on one connection).
            guard boolean(value) != nil else { return .answer("Reject") }
            return .answer("Yes")
        case "IFMarker", "OFMarker":
            // RFC 3720 markers (dropped by RFC 7143): AND with No.
            return .answer("No")
        case "TargetAlias", "TargetAddress", "TargetPortalGroupTag":
            // Declared by targets only: an initiator sending them is in error (RFC 7143 §13.7-13.9).
            return .fail(.initiatorError)
        default:
            return .answer("NotUnderstood")
        }
    }

    func boolean(_ value: String) -> Bool? {
        switch value {
        case "Yes": true
        case "No": false
        default: nil
        }
    }

    /// Numerical keys whose result is the smaller value (RFC 7143 §6.2.2).
    mutating func smaller(
        _ value: String, limit: UInt32, range: ClosedRange<UInt32>, _ apply: (inout ISCSISessionParameters, UInt32) -> Void
    ) -> KeyOutcome {
        guard let n = UInt32(value), range.contains(n) else { return .answer("Reject") }
        let result = min(n, limit)
        apply(&parameters, result)
        return .answer(String(result))
    }
}
