import CairnIO
import Logging

extension Pool {
    /// Stops writes to the pool after an I/O error on the durability path. The one entry point for
    /// every such error, in the engine and in the layers above it (a backup journal, a mirror's
    /// records): after a failed fsync/fdatasync Linux may already have dropped the data from the page
    /// cache and reports the error only once, so a later sync could succeed over a hole (PostgreSQL's
    /// "fsyncgate"). Nothing short of a restart, which recovers from what is on the disk, is safe.
    ///
    /// After this call every write, FLUSH and management change fails with the returned error; reads
    /// go on. The first failure is kept (and logged once at critical level naming the file and the
    /// call); later ones are only returned. `file` and `call` are used when `error` is not an `IOError`
    /// (which names its own).
    @discardableResult
    public func failStop(file: String, call: String, error: any Error) -> EngineError {
        let (file, call) = (error as? IOError).map { ($0.path, $0.operation) } ?? (file, call)
        let failure = EngineError(
            .ioFailure,
            "writes stopped: \(call) on \(file) failed; data acknowledged before this point is safe; check the disk "
                + "and restart the daemon",
            cause: error)
        let first = monitor.withLock { () -> Bool in
            guard state.failure == nil else { return false }
            state.failure = failure
            return true
        }
        if first {
            logger.critical(
                "I/O error on the durability path: the pool stopped accepting writes until restarted",
                metadata: ["file": "\(file)", "call": "\(call)", "error": "\(error)"])
        }
        monitor.broadcast()
        return monitor.withLock { state.failure ?? failure }
    }

    /// True once `failStop` ran: writes are refused until the daemon restarts.
    public var hasFailed: Bool { monitor.withLock { state.failure != nil } }
}
