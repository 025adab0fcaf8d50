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
public struct BackupRestorer: Sendable {
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

    /// What can be refused without reading the archives' data: each header, the chain, the target.
    /// Cheap; a restore job runs it before it starts, so a refusal is an immediate answer.
    public func precheck(paths: [String], to volume: String, force: Bool) throws {
        do {
            let headers = try paths.map { try ArchiveReader(input: try FileArchiveInput(path: $0), name: $0).header }
            try ArchiveChain.check(headers)
            _ = try checkTarget(volume, size: headers[0].volumeSize, force: force)
        } catch let error as ArchiveError {
            throw EngineError(.invalidArgument, error.message)
        }
    }

    /// True when `volume` exists (and may be overwritten); throws when it may not be restored into.
    private func checkTarget(_ volume: String, size: UInt64, force: Bool) throws -> Bool {
        guard let existing = try? pool.volumes.info(named: volume) else { return false }
        guard force else {
            throw EngineError(
                .alreadyExists,
                "volume '\(volume)' exists; restoring would overwrite it: use --force, or restore to a new name")
        }
        guard existing.size == size else {
            throw EngineError(
                .invalidArgument,
                "volume '\(volume)' is \(existing.size) bytes but the archive holds \(size); "
                    + "resize it first or restore to a new name")
        }
        guard existing.attachments == 0 else {
            throw EngineError(
                .busy, "volume '\(volume)' has \(existing.attachments) session(s) attached; disconnect them first")
        }
        return true
    }

    /// Restores; `progress` gets (bytes applied, bytes to apply) once the archives are verified.
    public func restore(
        paths: [String], to volume: String, force: Bool, progress: (UInt64, UInt64) -> Void = { _, _ in }
    ) throws -> RestoreReport {
        let summaries: [ArchiveSummary]
        do {
            summaries = try Self.verifyChain(paths: paths)
        } catch let error as ArchiveError {
            throw EngineError(.invalidArgument, error.message)
        }
        let header = summaries[0].header
        let total = summaries.reduce(0) { $0 + $1.dataBytes + $1.zeroBytes }
        // Checked again: the volume may have changed since `precheck`.
        let created = try !checkTarget(volume, size: header.volumeSize, force: force)
        if created { try pool.volumes.create(name: volume, size: header.volumeSize, chunkSize: header.chunkSize) }
        do {
            let id = try pool.volumes.id(named: volume)
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
                        progress(report.dataBytes + report.zeroBytes, total)
                    case .zero(let offset, let length):
                        try pool.discard(volumeID: id, offset: offset, length: length, mode: .zero)
                        report.zeroBytes += length
                        progress(report.dataBytes + report.zeroBytes, total)
                    }
                }
            }
            try pool.flush()
            return report
        } catch {
            // A new volume that could not be filled is not left behind half-restored.
            if created { try? pool.volumes.delete(name: volume, force: true) }
            if let error = error as? ArchiveError { throw EngineError(.invalidArgument, error.message) }
            throw error
        }
    }
}
