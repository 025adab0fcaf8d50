import Glibc
import Synchronization

/// Small files replaced whole and atomically: after a crash the file holds the old contents or the new,
/// never a mix, and once `replace` returns the new contents survive a power cut.
///
/// The sequence is the one every careful storage system uses (SQLite's journal, PostgreSQL's control
/// file, LevelDB's CURRENT): write a temporary file under a name no other writer uses, fsync it, rename
/// it over the target, fsync the directory. A unique temporary name lets two writers of one file
/// race without one renaming the other's half-written temporary file.
public enum AtomicFile {
    /// Marks temporary files (`NAME.tmp.PID.N`): never a record, removed by `removeLeftovers`.
    public static let temporaryMarker = ".tmp."

    private static let counter = Atomic<UInt64>(0)

    /// A temporary name beside `path` that no other writer in any process uses.
    static func temporaryPath(for path: String) -> String {
        let n = counter.wrappingAdd(1, ordering: .relaxed).newValue
        return "\(path)\(temporaryMarker)\(getpid()).\(n)"
    }

    /// Replaces `path` with `bytes` atomically and durably.
    public static func replace(
        _ path: String, with bytes: [UInt8], in fileSystem: any DurableFileSystem = PosixFileSystem()
    ) throws {
        let temporary = try writeTemporary(bytes, beside: path, in: fileSystem)
        do {
            try fileSystem.rename(temporary, to: path)
        } catch {
            try? fileSystem.remove(temporary)
            throw error
        }
        try fileSystem.syncDirectory(fileSystem.directoryOf(path))
    }

    /// Creates `path` holding `bytes` atomically and durably; fails with an `IOError` of EEXIST when it
    /// exists (link(2) of the synced temporary file, so the file never exists half-written).
    public static func create(
        _ path: String, with bytes: [UInt8], in fileSystem: any DurableFileSystem = PosixFileSystem()
    ) throws {
        let temporary = try writeTemporary(bytes, beside: path, in: fileSystem)
        defer { try? fileSystem.remove(temporary) }
        try fileSystem.link(temporary, to: path)
        try fileSystem.syncDirectory(fileSystem.directoryOf(path))
    }

    /// Removes `path` durably (a missing file is not an error).
    public static func remove(_ path: String, in fileSystem: any DurableFileSystem = PosixFileSystem()) throws {
        try fileSystem.remove(path)
        try fileSystem.syncDirectory(fileSystem.directoryOf(path))
    }

    /// Removes temporary files a crash left in `directory` (call before any writer starts).
    public static func removeLeftovers(in directory: String, fileSystem: any DurableFileSystem = PosixFileSystem())
        throws
    {
        for name in try fileSystem.names(in: directory) where name.contains(temporaryMarker) {
            try fileSystem.remove(directory + "/" + name)
        }
    }

    private static func writeTemporary(_ bytes: [UInt8], beside path: String, in fileSystem: any DurableFileSystem)
        throws -> String
    {
        let temporary = temporaryPath(for: path)
        do {
            let handle = try fileSystem.create(temporary, exclusive: true)
            try handle.write(bytes, at: 0)
            try handle.sync()
        } catch {
            try? fileSystem.remove(temporary)
            throw error
        }
        return temporary
    }
}

extension DurableFileSystem {
    /// The directory holding `path`.
    func directoryOf(_ path: String) -> String { Self.directory(of: path) }
}
