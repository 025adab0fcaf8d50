import NIOCore

/// Corks the frames one event-loop turn writes: what is written while the loop runs its queued tasks
/// (concurrent host writes on the primary, bursts of finished writes on the target) leaves in one
/// gathering write instead of one syscall each. The flush runs right after the tasks already queued, so
/// no frame waits for anything but the current turn.
///
/// `@unchecked Sendable`: loop-confined, like the channel handler that owns it.
final class CorkedFlush: @unchecked Sendable {
    /// A flush is queued on the loop for frames written since the last one.
    private var scheduled = false

    /// Asks for a flush at the end of this turn (one, however often it is asked).
    func flushSoon(_ channel: any Channel) {
        guard !scheduled else { return }
        scheduled = true
        channel.eventLoop.execute { [self] in
            scheduled = false
            channel.flush()
        }
    }
}
