import NBDProtocol
import Testing

@Suite struct LivenessStateMachineTests {
    static let second: UInt64 = 1_000_000_000

    @Test func partialMessageWithoutProgressCloses() {
        var machine = NBDLivenessStateMachine(timeouts: .init(idle: nil, payloadProgress: .seconds(30)), now: 0)
        #expect(machine.bytesReceived(partialMessage: false, now: 1) == .none)
        #expect(machine.bytesReceived(partialMessage: true, now: 2 * Self.second) == .armTimer(deadline: 32 * Self.second))
        // More bytes inside the message move the deadline.
        #expect(machine.bytesReceived(partialMessage: true, now: 10 * Self.second) == .armTimer(deadline: 40 * Self.second))
        // A timer armed for the old deadline fires early: re-arm for the new one.
        #expect(machine.timerFired(now: 32 * Self.second) == .armTimer(deadline: 40 * Self.second))
        guard case .close(let reason) = machine.timerFired(now: 40 * Self.second) else {
            Issue.record("expected close")
            return
        }
        #expect(reason.contains("progress"))
    }

    @Test func idleTimeoutAppliesOnlyBetweenMessagesWithNothingRunning() {
        var machine = NBDLivenessStateMachine(timeouts: .init(idle: .seconds(100), payloadProgress: .seconds(5)), now: 0)
        #expect(machine.bytesReceived(partialMessage: false, now: 0) == .armTimer(deadline: 100 * Self.second))
        // A request runs: the server owes the reply, no deadline however long it takes.
        #expect(machine.requestsRunningChanged(to: 1, now: 1) == .none)
        #expect(machine.timerFired(now: 500 * Self.second) == .none)
        // Answered: the idle clock starts from then.
        #expect(machine.requestsRunningChanged(to: 0, now: 600 * Self.second) == .armTimer(deadline: 700 * Self.second))
        #expect(machine.timerFired(now: 699 * Self.second) == .armTimer(deadline: 700 * Self.second))
        guard case .close(let reason) = machine.timerFired(now: 700 * Self.second) else {
            Issue.record("expected close")
            return
        }
        #expect(reason.contains("idle"))
    }

    @Test func disabledTimeoutsNeverClose() {
        var machine = NBDLivenessStateMachine(timeouts: .init(idle: nil, payloadProgress: nil), now: 0)
        #expect(machine.bytesReceived(partialMessage: true, now: 0) == .none)
        #expect(machine.bytesReceived(partialMessage: false, now: 0) == .none)
        #expect(machine.timerFired(now: UInt64.max / 2) == .none)
    }

    @Test func defaultsAreNoIdleTimeoutAndAMinuteOfProgress() {
        let timeouts = NBDLivenessStateMachine.Timeouts()
        #expect(timeouts.idle == nil)
        #expect(timeouts.payloadProgress == .seconds(60))
    }
}
