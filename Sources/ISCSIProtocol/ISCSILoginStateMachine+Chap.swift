/// Authentication in the security stage (RFC 7143 §12.1.3): AuthMethod, then CHAP_A → CHAP_A/CHAP_I/
/// CHAP_C, then CHAP_N/CHAP_R (with CHAP_I/CHAP_C when the initiator wants mutual CHAP) → the target's
/// CHAP_N/CHAP_R. The login cannot leave the security stage before that is done; a wrong name or
/// secret, a missing step, or no CHAP where it is required ends the login with status 0x0201
/// (authentication failure, class 2: initiator error).
extension ISCSILoginStateMachine {
    enum ChapState: Equatable, Sendable {
        /// AuthMethod has not been negotiated.
        case notOffered
        /// AuthMethod=None was agreed.
        case none
        /// AuthMethod=CHAP was agreed; CHAP_A comes next.
        case agreed
        /// The identifier and challenge were sent; CHAP_N and CHAP_R come next.
        case challenged
        /// The initiator proved its secret (and, if it asked, got this target's answer).
        case authenticated

        var inProgress: Bool { self == .agreed || self == .challenged }
    }

    enum ChapStep {
        case proceed([(key: String, value: String)])
        case fail(Status)
    }

    /// AuthMethod and the CHAP_ keys of one request: AuthMethod is answered at once, CHAP keys are kept
    /// for `chapStep` (they only make sense together).
    mutating func authenticate(key: String, value: String, stage: UInt8) -> KeyOutcome {
        guard key == "AuthMethod" else {
            // CHAP keys outside the security stage are a protocol error (RFC 7143 §6.3.1). AuthMethod is
            // answered wherever it comes, as before CHAP existed here: some initiators repeat it.
            guard stage == Self.securityStage else { return .fail(.initiatorError) }
            chapKeys[key] = value
            return .silent
        }
        guard chap == .notOffered || (chap == .none && !value.contains("CHAP")) else { return .fail(.initiatorError) }
        // Offered in the initiator's order of preference; this target prefers CHAP whenever it has secrets.
        let offered = value.split(separator: ",").map(String.init)
        if chapConfiguration.offersChap, offered.contains("CHAP") {
            chap = .agreed
            return .answer("CHAP")
        }
        if offered.contains("None"), !chapConfiguration.required {
            chap = .none
            return .answer("None")
        }
        return .fail(.authenticationFailure)
    }

    /// Acts on the CHAP keys of the request just read. `leaving`: the initiator asked to leave the stage.
    mutating func chapStep(stage: UInt8, leaving: Bool) -> ChapStep {
        if stage != Self.securityStage && chap.inProgress { return .fail(.authenticationFailure) }
        switch chap {
        case .agreed:
            guard let algorithms = chapKeys["CHAP_A"] else {
                return chapKeys.isEmpty ? .proceed([]) : .fail(.initiatorError)
            }
            guard algorithms.split(separator: ",").contains(Substring(ISCSIChap.md5Algorithm)),
                chapChallenge.count >= ISCSIChap.challengeLength
            else { return .fail(.authenticationFailure) }
            chap = .challenged
            return .proceed([
                ("CHAP_A", ISCSIChap.md5Algorithm), ("CHAP_I", String(chapIdentifier)),
                ("CHAP_C", ISCSIChap.hex(chapChallenge)),
            ])
        case .challenged:
            guard let name = chapKeys["CHAP_N"], let responseText = chapKeys["CHAP_R"] else {
                return chapKeys.isEmpty && !leaving ? .proceed([]) : .fail(.authenticationFailure)
            }
            guard let secret = chapConfiguration.initiatorSecrets[name], let response = ISCSIChap.binary(responseText),
                ISCSIChap.same(
                    response, ISCSIChap.response(identifier: chapIdentifier, secret: secret, challenge: chapChallenge))
            else { return .fail(.authenticationFailure) }
            var answers: [(key: String, value: String)] = []
            if chapKeys["CHAP_I"] != nil || chapKeys["CHAP_C"] != nil {
                // Mutual CHAP: answer the initiator's challenge with this target's secret. A challenge
                // equal to ours would let an attacker have us compute the answer to our own challenge.
                guard let target = chapConfiguration.target, let identifier = chapKeys["CHAP_I"].flatMap({ UInt8($0) }),
                    let challenge = chapKeys["CHAP_C"].flatMap(ISCSIChap.binary), challenge != chapChallenge
                else { return .fail(.authenticationFailure) }
                let answer = ISCSIChap.response(identifier: identifier, secret: target.secret, challenge: challenge)
                answers = [("CHAP_N", target.name), ("CHAP_R", ISCSIChap.hex(answer))]
            }
            chap = .authenticated
            parameters.authenticatedName = name
            return .proceed(answers)
        case .notOffered, .none, .authenticated:
            if !chapKeys.isEmpty { return .fail(.initiatorError) }
            // Leaving the security stage, or starting in the operational one, without CHAP where it is required.
            if chapConfiguration.required && chap != .authenticated && (stage != Self.securityStage || leaving) {
                return .fail(.authenticationFailure)
            }
            return .proceed([])
        }
    }
}
