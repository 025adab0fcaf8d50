import Foundation

extension BackupRecord {
    /// A backup's state: each case carries exactly what is known in it, so a record cannot claim, say, an
    /// archive size before its split time. A failed backup keeps the stage it stopped in, with what it had
    /// learnt by then (`cairn backup status` still shows T and the drain of a backup whose archive failed).
    public enum State: Sendable, Hashable {
        /// Not finished: in this stage.
        case running(Stage)
        /// The archive is complete and image A dropped.
        case succeeded(Archived, Ending)
        /// Stopped in this stage; what it left has been deleted (only the record stays).
        case failed(Stage, Ending)
    }

    /// The stages a backup goes through, each carrying the one before it.
    public enum Stage: Sendable, Hashable {
        /// Before T: building the images (the mirror method first builds its full copy).
        case splitting
        /// Split at T; the sessions on A are finishing their work.
        case draining(Split)
        /// A is frozen and durable; the archive is being written.
        case archiving(Archiving)
        /// The archive is complete and durable; image A is being dropped.
        case discarding(Archived)
    }

    /// The split at T.
    public struct Split: Sendable, Hashable {
        /// T.
        public var at: Date
        /// Sessions that stayed on image A.
        public var sessionsOnA: Int
    }

    /// Image A frozen: by its last session leaving, a seal, or the drain timeout.
    public struct Freeze: Sendable, Hashable {
        /// The split it froze A after.
        public var split: Split
        /// "drained", "sealed" or "timeout" (`OneWayMirror.DrainOutcome`).
        public var drain: String
        /// Sessions still on A when a seal or timeout froze it ("id address").
        public var sessionsLeftOnA: [String]
    }

    /// Writing the archive from frozen A.
    public struct Archiving: Sendable, Hashable {
        /// How A was frozen.
        public var freeze: Freeze
        /// When the archive's writing started (nil until it has).
        public var startedAt: Date?
        /// The archive is being written again after a daemon restart.
        public var resumed: Bool
    }

    /// The archive complete and durable.
    public struct Archived: Sendable, Hashable {
        /// The archiving it completed.
        public var archiving: Archiving
        /// Volume data the archive carries, and the archive file's size.
        public var dataBytes: UInt64
        public var archiveBytes: UInt64
        /// Time spent writing the archive (absent from records of daemons that did not measure it).
        public var seconds: Double?
    }

    /// How a backup ended.
    public struct Ending: Sendable, Hashable {
        /// When it ended.
        public var at: Date
        /// Why it failed, or that its archive was written again after a restart.
        public var message: String?
    }
}
