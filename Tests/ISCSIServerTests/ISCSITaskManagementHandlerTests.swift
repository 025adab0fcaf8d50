import ISCSIProtocol
import NIOCore
import Testing

@testable import ISCSIServer

/// ABORT TASK for a task the target no longer holds: answered by where its RefCmdSN stands against the
/// command window (RFC 7143 §11.6.1), as initiators such as libiscsi's compliance suite expect.
@Suite struct ISCSITaskManagementHandlerTests {
    let unit = MemoryUnit(size: 1 << 20, identifier: 0x77)

    func abortTask(_ session: HandlerSession, referencedTag: UInt32, refCmdSN: UInt32) throws
        -> UInt8
    {
        var pdu = ISCSIPDU(opcode: .taskManagementRequest)
        pdu.isImmediate = true
        pdu.flags = 0x80 | 1
        pdu.initiatorTaskTag = 9000
        pdu.setUInt32(referencedTag, 20)
        pdu.setUInt32(session.cmdSN, 24)
        pdu.setUInt32(refCmdSN, 32)
        let answer = try session.exchange(pdu)
        #expect(answer.opcode == .taskManagementResponse, "\(answer)")
        return answer.byte(2)
    }

    @Test("a task already answered does not exist; a command not received yet is taken as aborted")
    func abortAfterTheAnswer() throws {
        let session = try HandlerSession(catalog: MemoryCatalog(units: ["lun": unit]), name: "iqn.2026-12.test:tmf")
        let written = session.cmdSN
        #expect(try session.write() == SCSIStatus.good)
        // The WRITE (its tag is CmdSN + 100 in these sessions) was answered: TASK DOES NOT EXIST.
        #expect(try abortTask(session, referencedTag: written + 100, refCmdSN: written) == 1)
        // A CmdSN the target has not received yet (lost on the way): FUNCTION COMPLETE.
        #expect(try abortTask(session, referencedTag: 4242, refCmdSN: session.cmdSN) == 0)
    }
}
