import CairnIO
import Foundation
import Glibc

/// The `mirrors/` directory of a pool: one JSON record per mirrored volume and side, plus the primary's
/// change maps. Records are replaced with `AtomicFile` (unique temporary file, fsync, rename, fsync of
/// the directory), so a crash leaves the old record or the new one, never half of either, and two
/// writers of one record never share a temporary file.
///
/// Kept beside the pool's SQLite metadata rather than in it: replication is a layer above the engine, and
/// its state changes (a fracture, a generation) must be durable at moments the engine's group commit
/// does not know about.
public struct MirrorRecordStore: Sendable {
    public let directory: String
    let fileSystem: any DurableFileSystem

    public init(dataDirectory: String, fileSystem: any DurableFileSystem = PosixFileSystem()) throws {
        directory = dataDirectory + "/mirrors"
        self.fileSystem = fileSystem
        do {
            try fileSystem.makeDirectoryDurably(directory)
            try AtomicFile.removeLeftovers(in: directory, fileSystem: fileSystem)
        } catch {
            throw ReplicationError(.ioFailure, "cannot prepare \(directory): \(error)")
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
        do {
            try AtomicFile.replace(path, with: Array(data), in: fileSystem)
        } catch {
            throw ReplicationError(.ioFailure, "cannot save the mirror record \(path): \(error)")
        }
    }

    /// The record at `path`; a missing or unreadable file is an error naming it.
    public func load<T: Decodable>(_ type: T.Type, from path: String) throws -> T {
        let bytes: [UInt8]?
        do {
            bytes = try fileSystem.contents(of: path)
        } catch {
            throw ReplicationError(.ioFailure, "cannot read the mirror record \(path): \(error)")
        }
        guard let bytes else { throw ReplicationError(.notFound, "the mirror record \(path) does not exist") }
        do {
            return try JSONDecoder().decode(type, from: Data(bytes))
        } catch {
            throw ReplicationError(.corrupt, "\(path) is not a valid mirror record: \(error)")
        }
    }

    public func remove(_ path: String) throws {
        do {
            try AtomicFile.remove(path, in: fileSystem)
        } catch {
            throw ReplicationError(.ioFailure, "cannot remove \(path): \(error)")
        }
    }

    /// Every record file of one side ("primary" or "target").
    public func paths(prefix: String) throws -> [String] {
        let names: [String]
        do {
            names = try fileSystem.names(in: directory)
        } catch {
            throw ReplicationError(.ioFailure, "cannot list \(directory): \(error)")
        }
        return names.filter { $0.hasPrefix(prefix + "-") && $0.hasSuffix(".json") }.sorted().map { directory + "/" + $0 }
    }

    /// fsync of the directory holding `path`: makes a create, rename or unlink durable.
    static func syncDirectory(of path: String) throws {
        do {
            try PosixFileSystem().syncDirectory(PosixFileSystem.directory(of: path))
        } catch {
            throw ReplicationError(.ioFailure, "\(error)")
        }
    }
}
