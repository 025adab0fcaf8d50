import Logging
import NBDProtocol
import NIOCore

extension NBDConnectionHandler {
    /// Tells the liveness machine what changed (bytes arrived, or the requests running changed) and
    /// carries out its answer. Transmission phase only.
    func livenessEvent(bytesReceived: Bool) {
        guard case .transmission(let machine, _) = phase, var liveness else { return }
        let now = NIODeadline.now().uptimeNanoseconds
        var action = liveness.requestsRunningChanged(to: machine.requestsInFlight, now: now)
        if bytesReceived { action = liveness.bytesReceived(partialMessage: parser.holdsPartialMessage, now: now) }
        self.liveness = liveness
        run(liveness: action)
    }

    private func livenessTimerFired() {
        livenessTimer = nil
        guard case .transmission = phase, var liveness else { return }
        let action = liveness.timerFired(now: NIODeadline.now().uptimeNanoseconds)
        self.liveness = liveness
        run(liveness: action)
    }

    /// One timer at a time: a later deadline leaves the armed timer alone (it re-arms when it fires
    /// early), an earlier one replaces it; so steady traffic costs no timer churn.
    private func run(liveness action: NBDLivenessStateMachine.Action) {
        switch action {
        case .none:
            break
        case .close(let reason):
            logger.warning("NBD client stalled: closing the connection", metadata: ["reason": "\(reason)"])
            hardClose(reason)
        case .armTimer(let deadline):
            if let armed = livenessTimer, armed.deadline <= deadline { return }
            livenessTimer?.timer.cancel()
            guard let context else { return }
            let timer = context.eventLoop.assumeIsolated().scheduleTask(
                deadline: NIODeadline.uptimeNanoseconds(deadline)
            ) { self.livenessTimerFired() }
            livenessTimer = (timer, deadline)
        }
    }
}
