import CCairnIO
import Glibc

/// The few filesystem calls small state files need, behind a protocol so that tests can run the same
/// code on a simulated filesystem that loses what was not synced in a power cut.
///
/// Every error is an `IOError` naming the call and the file.
public protocol DurableFileSystem: Sendable {
    /// The whole file, or nil when it does not exist.
    func contents(of path: String) throws -> [UInt8]?
    /// Creates `path` with mode 0600 (`exclusive`: failing with EEXIST if it exists, else truncating it).
    func create(_ path: String, exclusive: Bool) throws -> any DurableFileHandle
    /// Opens `path` for writing, creating it (mode 0600) when missing. Returns the handle and whether it
    /// was created (the caller then syncs the directory).
    func openForWriting(_ path: String) throws -> (handle: any DurableFileHandle, created: Bool)
    /// rename(2): replaces `destination` atomically.
    func rename(_ source: String, to destination: String) throws
    /// link(2): fails with EEXIST when `destination` exists.
    func link(_ source: String, to destination: String) throws
    /// unlink(2); a missing file is not an error.
    func remove(_ path: String) throws
    /// fsync of a directory: makes the creates, renames and unlinks in it durable.
    func syncDirectory(_ path: String) throws
    /// mkdir(2) with mode 0700 (an existing directory is not an error); returns whether it was created.
    @discardableResult
    func makeDirectory(_ path: String) throws -> Bool
    /// The names in a directory (no "." or ".."); empty when it does not exist.
    func names(in directory: String) throws -> [String]
}

/// An open file of a `DurableFileSystem`.
public protocol DurableFileHandle: AnyObject, Sendable {
    /// The file's path, for messages.
    var path: String { get }
    /// Writes all of `bytes` at `offset`. Not durable until `sync()`.
    func write(_ bytes: [UInt8], at offset: UInt64) throws
    /// fsync: the file's data and size are durable when it returns. After a failure the data written
    /// since the last good sync may be gone from the disk although reads still return it (Linux reports
    /// a writeback error once), so callers treat a failed sync as final.
    func sync() throws
    /// Sets the file's length.
    func truncate(to length: UInt64) throws
}

extension DurableFileSystem {
    /// The directory holding `path` ("." for a bare name).
    public static func directory(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        return slash == path.startIndex ? "/" : String(path[..<slash])
    }

    /// mkdir, then fsync of the parent so the new directory survives a power cut.
    public func makeDirectoryDurably(_ path: String) throws {
        if try makeDirectory(path) { try syncDirectory(Self.directory(of: path)) }
    }
}

/// The real filesystem.
public struct PosixFileSystem: DurableFileSystem {
    public init() {}

    public func contents(of path: String) throws -> [UInt8]? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 {
            let code = errno
            if code == ENOENT { return nil }
            throw IOError(operation: "open", path: path, errno: code)
        }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 64 << 10)
        while true {
            let n = buffer.withUnsafeMutableBytes {
                cairn_pread(fd, $0.baseAddress!, UInt64($0.count), UInt64(bytes.count))
            }
            if n == -Int64(EINTR) { continue }
            if n < 0 { throw IOError(operation: "pread", path: path, errno: Int32(-n)) }
            if n == 0 { return bytes }
            bytes += buffer[0..<Int(n)]
        }
    }

    public func create(_ path: String, exclusive: Bool) throws -> any DurableFileHandle {
        let flags = O_WRONLY | O_CREAT | O_CLOEXEC | (exclusive ? O_EXCL : O_TRUNC)
        let fd = open(path, flags, 0o600)
        guard fd >= 0 else { throw IOError(operation: "open", path: path, errno: errno) }
        return PosixFileHandle(path: path, descriptor: fd)
    }

    public func openForWriting(_ path: String) throws -> (handle: any DurableFileHandle, created: Bool) {
        let fd = open(path, O_WRONLY | O_CLOEXEC)
        if fd >= 0 { return (PosixFileHandle(path: path, descriptor: fd), false) }
        guard errno == ENOENT else { throw IOError(operation: "open", path: path, errno: errno) }
        return (try create(path, exclusive: true), true)
    }

    public func rename(_ source: String, to destination: String) throws {
        guard Glibc.rename(source, destination) == 0 else {
            throw IOError(operation: "rename", path: "\(source) -> \(destination)", errno: errno)
        }
    }

    public func link(_ source: String, to destination: String) throws {
        guard Glibc.link(source, destination) == 0 else {
            throw IOError(operation: "link", path: destination, errno: errno)
        }
    }

    public func remove(_ path: String) throws {
        guard unlink(path) == 0 || errno == ENOENT else { throw IOError(operation: "unlink", path: path, errno: errno) }
    }

    public func syncDirectory(_ path: String) throws {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw IOError(operation: "open", path: path, errno: errno) }
        defer { close(fd) }
        let rc = cairn_fsync(fd)
        if rc < 0 { throw IOError(operation: "fsync", path: path, errno: -rc) }
    }

    public func makeDirectory(_ path: String) throws -> Bool {
        if mkdir(path, 0o700) == 0 { return true }
        let code = errno
        if code == EEXIST { return false }
        throw IOError(operation: "mkdir", path: path, errno: code)
    }

    public func names(in directory: String) throws -> [String] {
        guard let stream = opendir(directory) else {
            if errno == ENOENT { return [] }
            throw IOError(operation: "opendir", path: directory, errno: errno)
        }
        defer { closedir(stream) }
        var names: [String] = []
        while let entry = readdir(stream) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) {
                String(cString: $0.bindMemory(to: CChar.self).baseAddress!)
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names.sorted()
    }
}

/// A descriptor opened by `PosixFileSystem`, closed when the handle goes.
final class PosixFileHandle: DurableFileHandle {
    let path: String
    let descriptor: Int32

    init(path: String, descriptor: Int32) {
        self.path = path
        self.descriptor = descriptor
    }

    deinit { close(descriptor) }

    func write(_ bytes: [UInt8], at offset: UInt64) throws {
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeBytes {
                cairn_pwrite(descriptor, $0.baseAddress! + done, UInt64(bytes.count - done), offset + UInt64(done))
            }
            if n == -Int64(EINTR) { continue }
            if n < 0 { throw IOError(operation: "pwrite", path: path, errno: Int32(-n)) }
            done += Int(n)
        }
    }

    func sync() throws {
        while true {
            let rc = cairn_fsync(descriptor)
            if rc == -EINTR { continue }
            if rc < 0 { throw IOError(operation: "fsync", path: path, errno: -rc) }
            return
        }
    }

    func truncate(to length: UInt64) throws {
        guard ftruncate(descriptor, off_t(length)) == 0 else {
            throw IOError(operation: "ftruncate", path: path, errno: errno)
        }
    }
}

extension PosixFileSystem {
    /// mkdir -p, syncing the parent of every directory it creates (a new directory's name is durable
    /// only once its parent is synced).
    public func makeDirectoriesDurably(_ path: String) throws {
        var missing: [String] = []
        var current = path
        while !current.isEmpty, current != "/", current != ".", access(current, F_OK) != 0 {
            missing.append(current)
            current = Self.directory(of: current)
        }
        for directory in missing.reversed() { try makeDirectoryDurably(directory) }
    }

    /// True when `path` names an existing file or directory.
    public func exists(_ path: String) -> Bool { access(path, F_OK) == 0 }
}
