import CairnIO
import Foundation

/// Where a pool's bytes live: its metadata store and its slot files. The daemon uses a directory on
/// a local filesystem; tests substitute media that simulate power loss.
public protocol PoolMedia: Sendable {
    /// For messages ("/var/lib/cairn").
    var location: String { get }
    func openMetadataStore() throws -> any MetadataStore
    /// Opens (creating it empty when absent) the metadata journal: the file group commits append to
    /// before a checkpoint moves them into the metadata store. Lives with the metadata store.
    func openMetadataJournal() throws -> any StorageFile
    /// Opens the slot file `name` in the pool's data directory, or in the directory `store` (another
    /// disk), creating it empty if it does not exist.
    func openSlotFile(named name: String, in store: String?) throws -> any StorageFile
    /// Opens (creating it empty when absent) the checksum file of slot file `name`, beside it
    /// (docs/ARCHITECTURE.md, "Data checksums"). By default another file like a slot file.
    func openChecksumFile(forSlotFile name: String, in store: String?) throws -> any StorageFile
    /// Creates (when missing) and checks a directory that is to hold slot files of a store.
    func prepareStore(at path: String) throws
    /// The fastest copy method slot files on these media support (probed once at open).
    func probeCopyMethod() -> CopyMethod
    /// Space the filesystem can still give the pool, in bytes (nil: unknown).
    func availableBytes() -> UInt64?
}

extension PoolMedia {
    public func openChecksumFile(forSlotFile name: String, in store: String?) throws -> any StorageFile {
        try openSlotFile(named: ChecksumLayout.checksumFileName(forSlotFile: name), in: store)
    }
}

/// A pool in a directory: `metadata.sqlite`, `metadata.journal` and `data/slots-<chunk size>.dat`.
public final class DirectoryMedia: PoolMedia {
    public let location: String
    private let lock: ExclusiveFileLock
    private let copyMethod: CopyMethod
    /// How slot files write data.
    public let dataWrites: StorageWriteMode

    /// Name of the file the owning process holds an exclusive flock on.
    public static let lockFileName = "pool.lock"

    /// Opens (creating when absent) the pool directory and takes its lock: only one process may own
    /// a pool.
    public init(directory: String, dataWrites: StorageWriteMode = .buffered) throws {
        self.dataWrites = dataWrites
        do {
            try PosixFileSystem().makeDirectoriesDurably(directory + "/data")
        } catch {
            throw EngineError(.ioFailure, "cannot create the pool directory \(directory)", cause: error)
        }
        do {
            lock = try ExclusiveFileLock(path: directory + "/" + Self.lockFileName)
        } catch let error as IOError where error.kind == .busy {
            throw EngineError(
                .poolLocked,
                "the pool in \(directory) is in use by another cairn process; stop it or use another --data-dir")
        } catch {
            throw EngineError.io("locking the pool in \(directory)", error)
        }
        location = directory
        copyMethod = Self.probeCopyMethod(in: directory + "/data")
    }

    public func openMetadataStore() throws -> any MetadataStore {
        try SQLiteMetadataStore(path: location + "/metadata.sqlite")
    }

    /// Name of the metadata journal, next to `metadata.sqlite`.
    public static let journalFileName = "metadata.journal"

    public func openMetadataJournal() throws -> any StorageFile {
        do {
            return try PosixStorageFile(path: location + "/" + Self.journalFileName, create: true)
        } catch {
            throw EngineError.io("opening the metadata journal", error)
        }
    }

    public func openSlotFile(named name: String, in store: String?) throws -> any StorageFile {
        let file: PosixStorageFile
        do {
            let directory = store ?? location + "/data"
            // A new slot file's name must survive a power cut like its data: sync its directory.
            let fileSystem = PosixFileSystem()
            try fileSystem.makeDirectoriesDurably(directory)
            let created = !fileSystem.exists(directory + "/" + name)
            file = try PosixStorageFile(
                path: directory + "/" + name, create: true, direct: dataWrites == .direct,
                writeThrough: dataWrites == .writeThrough)
            if created { try fileSystem.syncDirectory(directory) }
        } catch {
            throw EngineError.io("opening slot file \(name)", error)
        }
        switch copyMethod {
        case .reflink: break
        case .copyFileRange: file.disableReflink()
        case .userspace:
            file.disableReflink()
            file.disableCopyFileRange()
        }
        return file
    }

    /// Through the page cache whatever `dataWrites` says: checksum pages are small, rewritten often and
    /// synced by every commit.
    public func openChecksumFile(forSlotFile name: String, in store: String?) throws -> any StorageFile {
        let directory = store ?? location + "/data"
        let path = directory + "/" + ChecksumLayout.checksumFileName(forSlotFile: name)
        do {
            let fileSystem = PosixFileSystem()
            let created = !fileSystem.exists(path)
            let file = try PosixStorageFile(path: path, create: true)
            if created { try fileSystem.syncDirectory(directory) }
            return file
        } catch {
            throw EngineError.io("opening checksum file \(path)", error)
        }
    }

    public func probeCopyMethod() -> CopyMethod { copyMethod }

    public func prepareStore(at path: String) throws {
        do {
            try PosixFileSystem().makeDirectoriesDurably(path)
        } catch {
            throw EngineError(.invalidArgument, "cannot create the store directory \(path)", cause: error)
        }
        guard FileManager.default.isWritableFile(atPath: path) else {
            throw EngineError(.permissionDenied, "the store directory \(path) is not writable")
        }
    }

    /// Copies one page inside a scratch file and checks the result: the first method that works is
    /// what breaking sharing will use.
    private static func probeCopyMethod(in directory: String) -> CopyMethod {
        let path = directory + "/.copy-probe"
        defer { unlink(path) }
        guard let file = try? PosixStorageFile(path: path, create: true) else { return .userspace }
        let page = 4096
        let pattern = [UInt8](repeating: 0x5a, count: page)
        guard (try? pattern.withUnsafeBytes({ try file.write($0, at: 0) })) != nil,
            let method = try? file.copy(from: file, at: 0, to: UInt64(page), length: UInt64(page))
        else { return .userspace }
        var check = [UInt8](repeating: 0, count: page)
        guard (try? check.withUnsafeMutableBytes({ try file.read(into: $0, at: UInt64(page)) })) != nil,
            check == pattern
        else { return .userspace }
        return method
    }

    public func availableBytes() -> UInt64? {
        var info = statvfs()
        guard statvfs(location, &info) == 0 else { return nil }
        return UInt64(info.f_bavail) * UInt64(info.f_frsize)
    }
}
