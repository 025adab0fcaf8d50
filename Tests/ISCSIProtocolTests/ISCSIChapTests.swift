import ISCSIProtocol
import NIOCore
import Testing

/// CHAP in the login state machine, as libiscsi drives it: AuthMethod (T=1) → CHAP_A → CHAP_N/CHAP_R
/// (T=1), with and without mutual CHAP; wrong secrets, missing steps and required CHAP refused.
@Suite struct ISCSIChapTests {
    typealias Login = ISCSILoginStateMachineTests
    static let challenge = [UInt8](0..<16)
    static let identifier: UInt8 = 0x2A
    static let configuration = ISCSIChapConfiguration(
        initiatorSecrets: ["host1": "host1-secret-0123", "host2": "host2-secret-4567"],
        target: (name: "cairn-target", secret: "target-secret-89ab"))
    static let initiatorName = "iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test"

    static func machine(_ configuration: ISCSIChapConfiguration = configuration) -> ISCSILoginStateMachine {
        ISCSILoginStateMachine(tsih: 3, chap: configuration, chapIdentifier: identifier, chapChallenge: challenge)
    }

    /// The first two exchanges: AuthMethod agreed (the login stays in the security stage), then the challenge.
    static func challenged(_ machine: inout ISCSILoginStateMachine) throws {
        let offer = machine.receive(
            Login.login(csg: 0, nsg: 1, transit: true, [
                ("InitiatorName", initiatorName), ("TargetName", Login.target), ("SessionType", "Normal"),
                ("AuthMethod", "CHAP,None"),
            ])) { _, _ in Issue.record("the target was looked up before authentication"); return false }
        guard case .respond(let agreed) = offer else { throw Failure("\(offer)") }
        #expect(agreed.flags == 0x00)  // T=0: not before CHAP is done.
        #expect(try Login.answers(agreed)["AuthMethod"] == "CHAP")
        let select = machine.receive(Login.login(csg: 0, nsg: 1, transit: false, expStatSN: 1, [("CHAP_A", "5")])) {
            _, _ in false
        }
        guard case .respond(let sent) = select else { throw Failure("\(select)") }
        let keys = try Login.answers(sent)
        #expect(keys["CHAP_A"] == "5")
        #expect(keys["CHAP_I"] == "42")
        #expect(keys["CHAP_C"] == "0x000102030405060708090a0b0c0d0e0f")
        #expect(sent.flags == 0x00)
    }

    struct Failure: Error, CustomStringConvertible {
        var description: String
        init(_ description: String) { self.description = description }
    }

    @Test func theResponseIsRFC1994MD5() {
        let response = ISCSIChap.response(identifier: Self.identifier, secret: "host1-secret-0123", challenge: Self.challenge)
        #expect(ISCSIChap.hex(response) == "0x2b8c878ea089d2516006681261b783ae")
        #expect(ISCSIChap.binary("0x2B8C878EA089D2516006681261B783AE") == response)
        #expect(ISCSIChap.binary("0bAQID+g==") == [1, 2, 3, 250])
        #expect(ISCSIChap.binary("0x123") == [0x01, 0x23])
        for bad in ["", "0x", "12", "0xzz", "0b!!", "0q12", "0x" + String(repeating: "ab", count: 2000)] {
            #expect(ISCSIChap.binary(bad) == nil, "\(bad)")
        }
    }

    @Test func oneWayChapAuthenticatesAndNamesTheSession() throws {
        var machine = Self.machine()
        try Self.challenged(&machine)
        let response = ISCSIChap.response(identifier: Self.identifier, secret: "host1-secret-0123", challenge: Self.challenge)
        var askedAs: String?
        let proof = machine.receive(
            Login.login(csg: 0, nsg: 1, transit: true, expStatSN: 2, [
                ("CHAP_N", "host1"), ("CHAP_R", ISCSIChap.hex(response)),
            ])) { target, name in
            askedAs = name
            return target == Login.target
        }
        guard case .respond(let accepted) = proof else { Issue.record("\(proof)"); return }
        #expect(accepted.flags == 0x81)  // T, CSG 0 → NSG 1.
        #expect(accepted.uint16(36) == 0)
        #expect(try Login.answers(accepted)["CHAP_N"] == nil)  // No mutual CHAP asked for.
        #expect(askedAs == "host1")
        let final = machine.receive(Login.login(csg: 1, nsg: 3, transit: true, expStatSN: 3, [])) { _, _ in true }
        guard case .complete(_, let parameters) = final else { Issue.record("\(final)"); return }
        #expect(parameters.authenticatedName == "host1")
    }

    @Test func mutualChapAnswersTheInitiatorsChallenge() throws {
        var machine = Self.machine()
        try Self.challenged(&machine)
        let response = ISCSIChap.response(identifier: Self.identifier, secret: "host2-secret-4567", challenge: Self.challenge)
        let theirs = [UInt8](repeating: 0xAA, count: 16)
        let proof = machine.receive(
            Login.login(csg: 0, nsg: 1, transit: true, expStatSN: 2, [
                ("CHAP_N", "host2"), ("CHAP_R", ISCSIChap.hex(response)), ("CHAP_I", "7"), ("CHAP_C", ISCSIChap.hex(theirs)),
            ])) { _, _ in true }
        guard case .respond(let accepted) = proof else { Issue.record("\(proof)"); return }
        let keys = try Login.answers(accepted)
        #expect(keys["CHAP_N"] == "cairn-target")
        #expect(keys["CHAP_R"] == "0x763a4d186458f957ec1ab4194d0bf332")
        #expect(accepted.flags == 0x81)
    }

    @Test func refusalsAreAuthenticationFailures() throws {
        let right = ISCSIChap.response(identifier: Self.identifier, secret: "host1-secret-0123", challenge: Self.challenge)
        let wrong = ISCSIChap.response(identifier: Self.identifier, secret: "not-the-secret!", challenge: Self.challenge)
        let cases: [(String, [(String, String)], ISCSIChapConfiguration)] = [
            ("wrong secret", [("CHAP_N", "host1"), ("CHAP_R", ISCSIChap.hex(wrong))], Self.configuration),
            ("unknown name", [("CHAP_N", "host9"), ("CHAP_R", ISCSIChap.hex(right))], Self.configuration),
            ("name of another secret", [("CHAP_N", "host2"), ("CHAP_R", ISCSIChap.hex(right))], Self.configuration),
            ("malformed response", [("CHAP_N", "host1"), ("CHAP_R", "0xnothex")], Self.configuration),
            ("no response", [("CHAP_N", "host1")], Self.configuration),
            (
                "reflected challenge",
                [("CHAP_N", "host1"), ("CHAP_R", ISCSIChap.hex(right)), ("CHAP_I", "42"), ("CHAP_C", ISCSIChap.hex(Self.challenge))],
                Self.configuration
            ),
            (
                "mutual without a target secret",
                [("CHAP_N", "host1"), ("CHAP_R", ISCSIChap.hex(right)), ("CHAP_I", "1"), ("CHAP_C", "0x0101")],
                ISCSIChapConfiguration(initiatorSecrets: ["host1": "host1-secret-0123"])
            ),
        ]
        for (name, keys, configuration) in cases {
            var machine = Self.machine(configuration)
            try Self.challenged(&machine)
            let action = machine.receive(Login.login(csg: 0, nsg: 1, transit: true, expStatSN: 2, keys)) { _, _ in true }
            guard case .fail(let response, let status) = action else {
                Issue.record("\(name): \(action)")
                continue
            }
            #expect(status == .authenticationFailure, "\(name)")
            #expect(response.uint16(36) == 0x0201, "\(name)")
            #expect(response.flags & 0x80 == 0, "\(name)")
        }
    }

    @Test func requiredChapRefusesLoginsWithoutIt() {
        var required = Self.configuration
        required.required = true
        // AuthMethod=None only.
        var machine = Self.machine(required)
        var action = machine.receive(
            Login.login(csg: 0, nsg: 1, transit: true, [
                ("InitiatorName", Self.initiatorName), ("TargetName", Login.target), ("AuthMethod", "None"),
            ])) { _, _ in true }
        guard case .fail(_, let status) = action else { Issue.record("\(action)"); return }
        #expect(status == .authenticationFailure)
        // Straight to the operational stage (libiscsi without a user name).
        machine = Self.machine(required)
        action = machine.receive(
            Login.login(csg: 1, nsg: 3, transit: true, [("InitiatorName", Self.initiatorName), ("TargetName", Login.target)])
        ) { _, _ in true }
        guard case .fail(_, let second) = action else { Issue.record("\(action)"); return }
        #expect(second == .authenticationFailure)
        // Without `required`, the same login gets in unnamed; CHAP_A before AuthMethod is a protocol error.
        machine = Self.machine()
        action = machine.receive(
            Login.login(csg: 1, nsg: 3, transit: true, [("InitiatorName", Self.initiatorName), ("TargetName", Login.target)])
        ) { _, name in name == nil }
        guard case .complete(_, let parameters) = action else { Issue.record("\(action)"); return }
        #expect(parameters.authenticatedName == nil)
        machine = Self.machine()
        action = machine.receive(
            Login.login(csg: 0, nsg: 1, transit: false, [
                ("InitiatorName", Self.initiatorName), ("TargetName", Login.target), ("CHAP_A", "5"),
            ])) { _, _ in true }
        guard case .fail(_, let third) = action else { Issue.record("\(action)"); return }
        #expect(third == .initiatorError)
    }
}
