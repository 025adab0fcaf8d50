import Foundation
import Glibc

/// The `mirrors/` directory of a pool: one JSON record per mirrored volume and side, plus the primary's
/// change maps. Records are replaced atomically and durably (write, fsync, rename, fsync the directory),
/// so a crash leaves the old record or the new one, never half of either.
///
/// Kept beside the pool's SQLite metadata rather than in it: replication is a layer above the engine, and
/// its state changes (a fracture, a generation) must be durable at moments the engine's group commit
/// does not know about.
public struct MirrorRecordStore: Sendable {
    public let directory: String

    public init(dataDirectory: String) throws {
        directory = dataDirectory + "/mirrors"
        if mkdir(directory, 0o700) != 0 && errno != EEXIST {
            throw ReplicationError(.ioFailure, "cannot create \(directory): \(String(cString: strerror(errno)))")
        }
    }

    public func primaryPath(_ volumeID: UInt64) -> String { "\(directory)/primary-\(volumeID).json" }
    public func targetPath(_ volumeID: UInt64) -> String { "\(directory)/target-\(volumeID).json" }
    public func changeMapPath(_ volumeID: UInt64) -> String { "\(directory)/primary-\(volumeID).map" }
    /// The target's change map: extents hosts wrote on a severed or promoted target volume.
    public func targetChangeMapPath(_ volumeID: UInt64) -> String { "\(directory)/target-\(volumeID).map" }
    /// The primary's pull set while it takes the target's changes (`re-establish --take-target-changes`).
    public func pullMapPath(_ volumeID: UInt64) -> String { "\(directory)/primary-\(volumeID).pull" }

    public func save<T: Encodable>(_ record: T, to path: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted]
        let data = try encoder.encode(record)
        let temporary = path + ".tmp"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw Self.ioError("open", temporary) }
        defer { close(fd) }
        let written = data.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        guard written == data.count, fsync(fd) == 0 else { throw Self.ioError("write", temporary) }
        guard rename(temporary, path) == 0 else { throw Self.ioError("rename", path) }
        try Self.syncDirectory(of: path)
    }

    public func load<T: Decodable>(_ type: T.Type, from path: String) throws -> T {
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        do {
            return try JSONDecoder().decode(type, from: data)
        } catch {
            throw ReplicationError(.corrupt, "\(path) is not a valid mirror record: \(error)")
        }
    }

    public func remove(_ path: String) throws {
        if unlink(path) != 0 && errno != ENOENT { throw Self.ioError("unlink", path) }
        try Self.syncDirectory(of: path)
    }

    /// Every record file of one side ("primary" or "target").
    public func paths(prefix: String) -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return names.filter { $0.hasPrefix(prefix + "-") && $0.hasSuffix(".json") }.sorted().map { directory + "/" + $0 }
    }

    /// fsync of the directory holding `path`: makes a create, rename or unlink durable.
    static func syncDirectory(of path: String) throws {
        let directory = URL(fileURLWithPath: path).deletingLastPathComponent().path
        let fd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw ioError("open", directory) }
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw ioError("fsync", directory) }
    }

    static func ioError(_ operation: String, _ path: String) -> ReplicationError {
        ReplicationError(.ioFailure, "\(operation) \(path): \(String(cString: strerror(errno)))")
    }
}
