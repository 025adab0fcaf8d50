import CairnIO
import Glibc
import Synchronization

/// A filesystem in memory with a volatile page cache, for the durable-file layer's power-cut tests.
///
/// File contents behave like `SimulatedStorageFile` (a sync makes them durable; a power cut keeps a
/// random subset of later writes, some torn). Directory changes (create, rename, link, unlink) are
/// durable once their directory is synced; a power cut keeps a random prefix of the changes made
/// since, in order, as a journaling filesystem commits metadata in order.
public final class SimulatedFileSystem: DurableFileSystem {
    enum DirectoryChange {
        case bind(String, SimulatedStorageFile)
        case unbind(String)
        /// A rename is one change: after a crash the file has the old name or the new one.
        case move(from: String, to: String, SimulatedStorageFile)

        var path: String {
            switch self {
            case .bind(let path, _), .unbind(let path), .move(_, let path, _): path
            }
        }
    }

    struct State {
        var entries: [String: SimulatedStorageFile] = [:]
        var durableEntries: [String: SimulatedStorageFile] = [:]
        var directories: Set<String> = ["/"]
        var pending: [DirectoryChange] = []
        var directorySyncFaults = 0
        /// Calls counted by `armPowerCut`.
        var calls = 0
        var cutAfterCalls: Int?
        var cutSeed: UInt64 = 0
        var image: SimulatedFileSystem?
    }

    let state: Mutex<State>

    public init() { state = Mutex(State()) }

    init(entries: [String: SimulatedStorageFile], directories: Set<String>) {
        state = Mutex(State(entries: entries, durableEntries: entries, directories: directories))
    }

    /// The file at `path` (to inject faults into it), or nil.
    public func file(at path: String) -> SimulatedStorageFile? { state.withLock { $0.entries[path] } }

    /// Arms a power cut after `calls` more calls (of any kind): the image the cut leaves is kept in
    /// `powerCutImage` while the calls go on, so a test can cut in the middle of an operation.
    public func armPowerCut(afterCalls calls: Int, seed: UInt64) {
        state.withLock { s in
            s.cutAfterCalls = s.calls + calls
            s.cutSeed = seed
            s.image = nil
        }
    }

    /// What the armed power cut left, once it happened.
    public var powerCutImage: SimulatedFileSystem? { state.withLock { $0.image } }

    /// Counts a call; takes the armed power cut's image when its time came.
    func countCall() { tick() }

    private func tick() {
        let seed = state.withLock { s -> UInt64? in
            s.calls += 1
            guard let cut = s.cutAfterCalls, s.calls >= cut else { return nil }
            s.cutAfterCalls = nil
            return s.cutSeed
        }
        guard let seed else { return }
        var random = SeededGenerator(seed: seed)
        let image = crashImage(using: &random)
        state.withLock { $0.image = image }
    }

    /// Makes the next `count` directory fsyncs fail with EIO.
    public func failNextDirectorySyncs(_ count: Int = 1) { state.withLock { $0.directorySyncFaults += count } }

    public func contents(of path: String) throws -> [UInt8]? {
        tick()
        guard let file = state.withLock({ $0.entries[path] }) else { return nil }
        let size = Int(try file.size())
        var bytes = [UInt8](repeating: 0, count: size)
        try bytes.withUnsafeMutableBytes { try file.read(into: $0, at: 0) }
        return bytes
    }

    public func create(_ path: String, exclusive: Bool) throws -> any DurableFileHandle {
        tick()
        return try state.withLock { s -> any DurableFileHandle in
            guard s.directories.contains(Self.directory(of: path)) else {
                throw IOError(operation: "open", path: path, errno: ENOENT)
            }
            if let existing = s.entries[path] {
                if exclusive { throw IOError(operation: "open", path: path, errno: EEXIST) }
                try existing.truncate(to: 0)
                return SimulatedFileHandle(path: path, file: existing, fileSystem: self)
            }
            let file = SimulatedStorageFile(path: path)
            s.entries[path] = file
            s.pending.append(.bind(path, file))
            return SimulatedFileHandle(path: path, file: file, fileSystem: self)
        }
    }

    public func openForWriting(_ path: String) throws -> (handle: any DurableFileHandle, created: Bool) {
        if let file = state.withLock({ $0.entries[path] }) {
            return (SimulatedFileHandle(path: path, file: file, fileSystem: self), false)
        }
        return (try create(path, exclusive: true), true)
    }

    public func rename(_ source: String, to destination: String) throws {
        tick()
        try state.withLock { s in
            guard let file = s.entries.removeValue(forKey: source) else {
                throw IOError(operation: "rename", path: source, errno: ENOENT)
            }
            s.entries[destination] = file
            s.pending.append(.move(from: source, to: destination, file))
        }
    }

    public func link(_ source: String, to destination: String) throws {
        tick()
        try state.withLock { s in
            guard let file = s.entries[source] else { throw IOError(operation: "link", path: source, errno: ENOENT) }
            guard s.entries[destination] == nil else { throw IOError(operation: "link", path: destination, errno: EEXIST) }
            s.entries[destination] = file
            s.pending.append(.bind(destination, file))
        }
    }

    public func remove(_ path: String) throws {
        tick()
        state.withLock { s in
            guard s.entries.removeValue(forKey: path) != nil else { return }
            s.pending.append(.unbind(path))
        }
    }

    public func syncDirectory(_ path: String) throws {
        tick()
        try state.withLock { s in
            if s.directorySyncFaults > 0 {
                s.directorySyncFaults -= 1
                throw IOError(operation: "fsync", path: path, errno: EIO)
            }
            var kept: [DirectoryChange] = []
            for change in s.pending {
                if Self.directory(of: change.path) == path {
                    Self.apply(change, to: &s.durableEntries)
                } else {
                    kept.append(change)
                }
            }
            s.pending = kept
        }
    }

    public func makeDirectory(_ path: String) throws -> Bool {
        state.withLock { s in s.directories.insert(path).inserted }
    }

    public func names(in directory: String) throws -> [String] {
        state.withLock { s in
            s.entries.keys.filter { Self.directory(of: $0) == directory }.map { String($0.dropFirst(directory.count + 1)) }
                .sorted()
        }
    }

    /// What a power cut leaves right now, as a new filesystem.
    public func crashImage(using random: inout some RandomNumberGenerator) -> SimulatedFileSystem {
        state.withLock { s in
            var entries = s.durableEntries
            let kept = Int.random(in: 0...s.pending.count, using: &random)
            for change in s.pending.prefix(kept) { Self.apply(change, to: &entries) }
            // One new file per old one, so hard links still share their contents.
            var images: [ObjectIdentifier: SimulatedStorageFile] = [:]
            var result: [String: SimulatedStorageFile] = [:]
            for (path, file) in entries.sorted(by: { $0.key < $1.key }) {
                let id = ObjectIdentifier(file)
                if images[id] == nil {
                    images[id] = SimulatedStorageFile(path: path, durable: file.crashImage(using: &random))
                }
                result[path] = images[id]
            }
            return SimulatedFileSystem(entries: result, directories: s.directories)
        }
    }

    static func apply(_ change: DirectoryChange, to entries: inout [String: SimulatedStorageFile]) {
        switch change {
        case .bind(let path, let file): entries[path] = file
        case .unbind(let path): entries[path] = nil
        case .move(let source, let destination, let file):
            entries[source] = nil
            entries[destination] = file
        }
    }
}

/// A handle on a simulated file.
final class SimulatedFileHandle: DurableFileHandle {
    let path: String
    let file: SimulatedStorageFile
    let fileSystem: SimulatedFileSystem

    init(path: String, file: SimulatedStorageFile, fileSystem: SimulatedFileSystem) {
        self.path = path
        self.file = file
        self.fileSystem = fileSystem
    }

    func write(_ bytes: [UInt8], at offset: UInt64) throws {
        fileSystem.countCall()
        try bytes.withUnsafeBytes { try file.write($0, at: offset) }
    }

    func sync() throws {
        fileSystem.countCall()
        try file.sync()
    }

    func truncate(to length: UInt64) throws {
        fileSystem.countCall()
        try file.truncate(to: length)
    }
}
