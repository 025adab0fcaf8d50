import ISCSIProtocol
import NIOCore
import Testing

@Suite struct ISCSILoginStateMachineTests {
    static let target = "iqn.2026-12.dev.cairn:vol"

    /// A Login Request as libiscsi sends it: CSG, NSG, T, ISID, CmdSN, ExpStatSN and text.
    static func login(
        csg: UInt8, nsg: UInt8, transit: Bool, cmdSN: UInt32 = 7, expStatSN: UInt32 = 0, _ pairs: [(String, String)]
    ) -> ISCSIPDU {
        var pdu = ISCSIPDU(opcode: .loginRequest, data: ISCSITextParameters.encode(pairs.map { ($0.0, $0.1) }))
        pdu.isImmediate = true
        pdu.flags = (transit ? 0x80 : 0) | csg << 2 | nsg
        pdu.setUInt64(0x0002_3D00_0001 << 16, 8)
        pdu.initiatorTaskTag = 1
        pdu.setUInt32(cmdSN, 24)
        pdu.setUInt32(expStatSN, 28)
        return pdu
    }

    static func answers(_ pdu: ISCSIPDU) throws -> [String: String] {
        Dictionary(try ISCSITextParameters.parse(pdu.data).map { ($0.key, $0.value) }, uniquingKeysWith: { a, _ in a })
    }

    @Test func aTwoStageLoginNegotiatesTheOperationalKeys() throws {
        var machine = ISCSILoginStateMachine(tsih: 9)
        let first = machine.receive(
            Self.login(csg: 0, nsg: 1, transit: true, [
                ("InitiatorName", "iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test"),
                ("TargetName", Self.target), ("SessionType", "Normal"), ("AuthMethod", "None"),
            ])) { $0 == Self.target }
        guard case .respond(let response) = first else { Issue.record("\(first)"); return }
        #expect(response.opcode == .loginResponse)
        #expect(response.flags == 0x81)  // T, CSG 0, NSG 1.
        #expect(response.uint16(36) == 0)
        #expect(try Self.answers(response)["AuthMethod"] == "None")
        #expect(try Self.answers(response)["TargetPortalGroupTag"] == "1")
        #expect(response.uint32(28) == 7)  // ExpCmdSN: the login's CmdSN.

        let second = machine.receive(
            Self.login(csg: 1, nsg: 3, transit: true, expStatSN: 1, [
                ("HeaderDigest", "CRC32C,None"), ("DataDigest", "None,CRC32C"),
                ("MaxRecvDataSegmentLength", "262144"), ("MaxBurstLength", "16776192"),
                ("FirstBurstLength", "262144"), ("InitialR2T", "No"), ("ImmediateData", "Yes"),
                ("MaxOutstandingR2T", "1"), ("ErrorRecoveryLevel", "0"), ("MaxConnections", "1"),
                ("DataPDUInOrder", "Yes"), ("DataSequenceInOrder", "Yes"), ("DefaultTime2Wait", "2"),
                ("DefaultTime2Retain", "0"), ("X-com.example.Unknown", "1"),
            ])) { $0 == Self.target }
        guard case .complete(let final, let parameters) = second else { Issue.record("\(second)"); return }
        #expect(final.flags == 0x87)  // T, CSG 1, NSG 3.
        #expect(final.uint16(14) == 9)  // TSIH.
        let keys = try Self.answers(final)
        #expect(keys["HeaderDigest"] == "CRC32C")
        #expect(keys["DataDigest"] == "None")
        #expect(keys["MaxBurstLength"] == String(ISCSILimits.targetMaxBurstLength))
        #expect(keys["FirstBurstLength"] == String(ISCSILimits.targetFirstBurstLength))
        #expect(keys["InitialR2T"] == "No")
        #expect(keys["ErrorRecoveryLevel"] == "0")
        #expect(keys["X-com.example.Unknown"] == "NotUnderstood")
        #expect(keys["MaxRecvDataSegmentLength"] == String(ISCSILimits.targetMaxRecvDataSegmentLength))
        #expect(parameters.headerDigest && !parameters.dataDigest)
        #expect(parameters.initiatorMaxRecvDataSegmentLength == 262_144)
        #expect(parameters.targetName == Self.target)
        #expect(parameters.tsih == 9)
        #expect(parameters.expCmdSN == 7)
        #expect(parameters.statSN == 2)
    }

    @Test func anUnknownTargetIsRefusedWithNotFound() {
        var machine = ISCSILoginStateMachine(tsih: 1)
        let action = machine.receive(
            Self.login(csg: 0, nsg: 1, transit: true, [("InitiatorName", "iqn.a:b"), ("TargetName", "iqn.nope:x")])
        ) { _ in false }
        guard case .fail(let response, let status) = action else { Issue.record("\(action)"); return }
        #expect(status == .targetNotFound)
        #expect(response.uint16(36) == 0x0203)
    }

    @Test func aLoginWithoutInitiatorNameIsRefused() {
        var machine = ISCSILoginStateMachine(tsih: 1)
        let action = machine.receive(Self.login(csg: 0, nsg: 1, transit: true, [("TargetName", Self.target)])) { _ in true }
        guard case .fail(_, let status) = action else { Issue.record("\(action)"); return }
        #expect(status == .missingParameter)
    }

    @Test func aDiscoverySessionNeedsNoTargetAndCallsNormalKeysIrrelevant() throws {
        var machine = ISCSILoginStateMachine(tsih: 3)
        let action = machine.receive(
            Self.login(csg: 1, nsg: 3, transit: true, [
                ("InitiatorName", "iqn.a:b"), ("SessionType", "Discovery"), ("InitialR2T", "Yes"),
            ])) { _ in false }
        guard case .complete(let response, let parameters) = action else { Issue.record("\(action)"); return }
        #expect(parameters.sessionType == .discovery)
        #expect(try Self.answers(response)["InitialR2T"] == "Irrelevant")
    }

    @Test func continuedTextIsGatheredBeforeItIsAnswered() throws {
        var machine = ISCSILoginStateMachine(tsih: 3)
        var first = Self.login(csg: 0, nsg: 1, transit: false, [("InitiatorName", "iqn.a:b")])
        first.flags |= 0x40
        guard case .respond(let ack) = machine.receive(first, targetExists: { _ in true }) else {
            Issue.record("no acknowledgement")
            return
        }
        #expect(ack.data.readableBytes == 0)
        let action = machine.receive(
            Self.login(csg: 0, nsg: 3, transit: true, [("TargetName", Self.target)])) { $0 == Self.target }
        guard case .complete = action else { Issue.record("\(action)"); return }
    }

    @Test func aStageGoingBackwardsIsAnInitiatorError() {
        var machine = ISCSILoginStateMachine(tsih: 3)
        let action = machine.receive(
            Self.login(csg: 1, nsg: 0, transit: true, [("InitiatorName", "iqn.a:b"), ("TargetName", Self.target)])
        ) { _ in true }
        guard case .fail(_, let status) = action else { Issue.record("\(action)"); return }
        #expect(status == .initiatorError)
    }
}
