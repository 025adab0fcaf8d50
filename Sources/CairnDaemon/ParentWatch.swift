import Foundation
import Logging
import ServiceLifecycle

/// `--exit-with-parent`: returns (which shuts the service group down gracefully) once the process that
/// started the daemon has exited.
///
/// Polls `getppid()` rather than using PR_SET_PDEATHSIG: that signal fires when the parent *thread*
/// that forked exits, and a parent with a thread pool (a test runner, any Swift program) may retire that
/// thread long before it exits. When the parent dies the daemon is reparented (to init or a subreaper),
/// so a changed parent id is the signal.
struct ParentWatch: Service {
    /// The parent when the command started.
    let parent: pid_t
    let logger: Logger
    /// How often the parent is checked: an orphaned daemon is noticed within this.
    static let pollInterval: Duration = .milliseconds(500)

    func run() async throws {
        // Cancelled by a graceful shutdown, so the group never waits out a poll interval.
        try? await cancelWhenGracefulShutdown {
            while getppid() == parent {
                try await Task.sleep(for: Self.pollInterval)
            }
            logger.notice("the parent process exited; shutting down", metadata: ["parent_pid": "\(parent)"])
        }
    }
}
