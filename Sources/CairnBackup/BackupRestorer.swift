import CairnArchive
import CairnEngine

/// What a restore did.
public struct RestoreReport: Sendable, Hashable {
    public var volume: String
    public var created: Bool
    public var archives: Int
    public var dataBytes: UInt64
    public var zeroBytes: UInt64
}

/// Applies a chain of archives (a full one, then its increments in order) to a volume of the pool.
/// Everything that can be refused is refused before the volume is touched: each archive is read and
/// checked entirely (checksums, order, trailer), the chain is checked link by link, and the target
/// is checked (exists without force, size, sessions attached).
public struct BackupRestorer {
    let pool: Pool

    public init(pool: Pool) { self.pool = pool }

    /// Reads and checks every archive and their chain; returns the headers in order.
    public static func verifyChain(paths: [String]) throws -> [ArchiveSummary] {
        var summaries: [ArchiveSummary] = []
        for path in paths {
            let reader = try ArchiveReader(input: try FileArchiveInput(path: path), name: path)
            summaries.append(try reader.verifyAll())
        }
        try ArchiveChain.check(summaries.map(\.header))
        return summaries
    }

    public func restore(paths: [String], to volume: String, force: Bool) throws -> RestoreReport {
        let summaries: [ArchiveSummary]
        do {
            summaries = try Self.verifyChain(paths: paths)
        } catch let error as ArchiveError {
            throw EngineError(.invalidArgument, error.message)
        }
        let header = summaries[0].header
        var created = false
        if let existing = try? pool.volumeInfo(named: volume) {
            guard force else {
                throw EngineError(
                    .alreadyExists,
                    "volume '\(volume)' exists; restoring would overwrite it: use --force, or restore to a new name")
            }
            guard existing.size == header.volumeSize else {
                throw EngineError(
                    .invalidArgument,
                    "volume '\(volume)' is \(existing.size) bytes but the archive holds \(header.volumeSize); "
                        + "resize it first or restore to a new name")
            }
            guard existing.attachments == 0 else {
                throw EngineError(
                    .busy, "volume '\(volume)' has \(existing.attachments) session(s) attached; disconnect them first")
            }
        } else {
            try pool.createVolume(name: volume, size: header.volumeSize, chunkSize: header.chunkSize)
            created = true
        }
        do {
            let id = try pool.volumeID(named: volume)
            if !created { try pool.discard(volumeID: id, offset: 0, length: header.volumeSize, mode: .zero) }
            var report = RestoreReport(volume: volume, created: created, archives: paths.count, dataBytes: 0, zeroBytes: 0)
            for path in paths {
                let reader = try ArchiveReader(input: try FileArchiveInput(path: path), name: path)
                while let record = try reader.next() {
                    switch record {
                    case .data(let offset, let bytes, _):
                        try bytes.withUnsafeBytes {
                            try pool.write(volumeID: id, offset: offset, source: .bytes($0), fua: false)
                        }
                        report.dataBytes += UInt64(bytes.count)
                    case .zero(let offset, let length):
                        try pool.discard(volumeID: id, offset: offset, length: length, mode: .zero)
                        report.zeroBytes += length
                    }
                }
            }
            try pool.flush()
            return report
        } catch {
            // A new volume that could not be filled is not left behind half-restored.
            if created { try? pool.deleteVolume(name: volume, force: true) }
            if let error = error as? ArchiveError { throw EngineError(.invalidArgument, error.message) }
            throw error
        }
    }
}
