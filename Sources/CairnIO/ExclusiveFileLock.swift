import CCairnIO
import Glibc

/// An exclusive flock() on a file, held for the lifetime of this object. Used to make sure only one
/// process owns a pool directory; the kernel drops it if the process dies, so a crash never leaves a
/// stale lock behind.
public final class ExclusiveFileLock: Sendable {
    public let path: String
    private let descriptor: Int32

    /// Takes the lock without waiting. Throws `IOError` with kind `.busy` when another process holds it.
    public init(path: String) throws {
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw IOError(operation: "open", path: path, errno: errno) }
        let rc = cairn_lock_exclusive(fd)
        if rc != 0 {
            Glibc.close(fd)
            throw IOError("flock", path, result: Int64(rc))
        }
        self.path = path
        self.descriptor = fd
    }

    deinit { Glibc.close(descriptor) }
}
