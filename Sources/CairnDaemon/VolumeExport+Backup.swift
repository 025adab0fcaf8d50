import CairnBackup
import CairnEngine
import NBDServer

/// A session's place in the backup routing of its volume: every request of a live-volume
/// session passes the volume's `VolumeRoute`. Without a backup that costs one uncontended lock; during
/// one, the one-way mirror decides whether the session reads and writes image A (it was open at T:
/// its writes reach A and B) or image B (opened later: B only).
struct BackupRouting: Sendable {
    let route: VolumeRoute
    let session: UInt64

    /// True while a backup splits the volume (reads must not bypass the mirror).
    var isActive: Bool { route.isActive }

    static func read(
        _ routing: BackupRouting?, offset: UInt64, into buffer: UnsafeMutableRawBufferPointer,
        plain: () throws -> [ReadExtent]
    ) throws -> [ReadExtent] {
        guard let routing else { return try plain() }
        return try routing.route.perform(plain) { try $0.read(session: routing.session, offset: offset, into: buffer) }
    }

    /// Returns whether a commit is still owed (FUA), on either path.
    static func write(
        _ routing: BackupRouting?, offset: UInt64, source: WriteSource, fua: Bool, plain: () throws -> Bool
    ) throws -> Bool {
        guard let routing else { return try plain() }
        return try routing.route.perform(plain) {
            try $0.write(session: routing.session, offset: offset, source: source, fua: fua)
        }
    }

    /// `plain` if it may run without passing a backup's mirror and without waiting; nil otherwise.
    static func writeIfPlain(_ routing: BackupRouting?, plain: () throws -> Bool) throws -> Bool? {
        guard let routing else { return try plain() }
        return try routing.route.performIfPlain(plain)
    }

    /// True when FLUSH must pass the mirror (its images keep durable state outside the pool).
    var flushNeedsMirror: Bool { route.isActive && route.mirror?.flushesOutsidePool == true }

    /// FLUSH: with a mirror, the images' own durable state too (the log method's table).
    static func flush(_ routing: BackupRouting, plain: () throws -> Void) throws {
        try routing.route.perform(plain) { try $0.flush() }
    }

    /// COPY_AND_WRITE: an A session's copy reaches B too, a B session's stays on B.
    static func copyAndWrite(_ routing: BackupRouting?, _ command: CopyAndWrite, fua: Bool, plain: () throws -> Void) throws {
        guard let routing else { return try plain() }
        try routing.route.perform(plain) { try $0.copyAndWrite(session: routing.session, command, fua: fua) }
    }

    /// `base:allocation` of the session's image while a backup splits the volume.
    static func allocation(
        _ routing: BackupRouting, offset: UInt64, length: UInt64, maximumExtents: Int,
        plain: () throws -> [AllocationExtent]
    ) throws -> [AllocationExtent] {
        try routing.route.perform(plain) {
            try $0.allocation(session: routing.session, offset: offset, length: length, maximumExtents: maximumExtents)
        }
    }

    static func discard(
        _ routing: BackupRouting?, offset: UInt64, length: UInt64, mode: DiscardMode, fua: Bool, plain: () throws -> Void
    ) throws {
        guard let routing else { return try plain() }
        try routing.route.perform(plain) {
            try $0.discard(session: routing.session, offset: offset, length: length, mode: mode, fua: fua)
        }
    }
}
