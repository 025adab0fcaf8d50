import ArgumentParser
import CairnAPI
import CairnArchive
import CairnBackup
import CairnDaemon
import NBDProtocol
import Foundation
import Logging
import NIOHTTP1

/// `cairn backup ...`: consistent backups without quiescing (the one-way mirror), archives,
/// verify and restore.
struct BackupCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "backup",
        abstract: "Consistent backups without quiescing: split at T, drain, archive; verify and restore archives.",
        discussion: """
            `backup start VOL --to FILE` splits the volume at T: NBD sessions open now stay on image A (their \
            writes reach A and the live volume B), sessions opened later use B only, under the same export name. \
            When every old session has closed (or `backup seal`, or --drain-timeout), A is a consistent image: \
            it is written to FILE and discarded. `--to -` streams the archive to standard output.
            """,
        subcommands: [Start.self, Status.self, Seal.self, Verify.self, Restore.self, Export.self])

    struct Start: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Back up VOL: split at T, drain, archive, discard A.")
        @OptionGroup var options: ClientOptions
        @Argument(help: "The volume to back up.") var volume: String
        @Option(name: .customLong("to"), help: "Archive file to create ('-': standard output).") var archive: String
        @Option(help: "One-way mirror method: mirror, log or cow (default cow).") var method: String?
        @Option(help: "An earlier archive of this volume: record only what changed since it (incremental).")
        var since: String?
        @Option(help: "Freeze image A after this many seconds even if old sessions remain (reported as timeout).")
        var drainTimeout: Double?
        @Flag(help: "Wait until the archive is written, showing progress.") var wait = false

        func run() async throws {
            try await runClient {
                let streaming = archive == "-"
                let target = streaming ? try makeFIFO() : absolutePath(archive)
                defer { if streaming { unlink(target) } }
                let request = StartBackupRequest(
                    volume: volume, archive: target, method: method, since: since.map(absolutePath),
                    drainTimeoutSeconds: drainTimeout)
                var backup = try await options.client.send(.POST, APIPath.backups, body: request, as: BackupDTO.self)
                // `--method mirror` answers while its copy is built; T (the split) comes after it. The
                // command returns after T whatever the method, so a caller knows which sessions are on A.
                while backup.phase == "establishing" {
                    if !options.json {
                        FileHandleStandardError.write("\rbackup \(backup.id): building the mirror \(backup.job.map(progressText) ?? "")   ")
                    }
                    try await Task.sleep(nanoseconds: 100_000_000)
                    backup = try await options.client.get(APIPath.backup(backup.id), as: BackupDTO.self)
                }
                if backup.phase == "failed" {
                    throw CLIError(message: backup.message ?? "the backup failed", exitCode: ExitStatus.failure)
                }
                if streaming {
                    if !options.json { FileHandleStandardError.write("backup \(backup.id): split at T, streaming\n") }
                    let client = options.client
                    let id = backup.id
                    try await copyToStandardOutput(fifo: target) {
                        // Until the daemon opens the FIFO: is the backup still going to write it?
                        let now = try await client.get(APIPath.backup(id), as: BackupDTO.self)
                        if now.phase == "failed" {
                            throw CLIError(message: "backup \(id) failed: \(now.message ?? "")", exitCode: ExitStatus.failure)
                        }
                    }
                } else if !wait {
                    if options.json { try Output.json(backup) } else { show(backup) }
                    return
                }
                backup = try await follow(backup.id, options: options, quiet: options.json || streaming)
                if !streaming { if options.json { try Output.json(backup) } else { show(backup) } }
                if backup.phase != "succeeded" {
                    throw CLIError(message: "backup \(backup.id) \(backup.phase): \(backup.message ?? "")", exitCode: ExitStatus.failure)
                }
            }
        }
    }

    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List backups (or show one): phase, drain, the sessions still on image A.")
        @OptionGroup var options: ClientOptions
        @Argument(help: "A backup id.") var id: String?

        func run() async throws {
            try await runClient {
                if let id {
                    let backup = try await options.client.get(APIPath.backup(id), as: BackupDTO.self)
                    if options.json { try Output.json(backup) } else { show(backup) }
                    return
                }
                let backups = try await options.client.get(APIPath.backups, as: [BackupDTO].self)
                if options.json { return try Output.json(backups) }
                Output.table(
                    ["ID", "VOLUME", "METHOD", "KIND", "PHASE", "DRAIN", "ON A", "ARCHIVE"],
                    backups.map {
                        [
                            $0.id, $0.volume, $0.method, $0.kind, $0.phase, $0.drain ?? "-",
                            $0.sessionsOnA.map { "\($0.id)@\($0.address)" }.joined(separator: ",").ifEmpty("-"),
                            $0.archive,
                        ]
                    })
            }
        }
    }

    struct Seal: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Declare image A consistent now: sessions still on A move to B and A is archived.")
        @OptionGroup var options: ClientOptions
        @Argument var id: String

        func run() async throws {
            try await runClient {
                let backup = try await options.client.send(
                    .POST, APIPath.sealBackup(id), body: [String: String](), as: BackupDTO.self)
                if options.json { try Output.json(backup) } else { show(backup) }
            }
        }
    }

    struct Verify: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Check archives (every checksum, order, trailer); several: also that they form one chain.")
        @Flag(name: .long, help: "Print JSON.") var json = false
        @Argument(help: "Archive files: a full archive, then its increments in order.") var archives: [String]

        func run() async throws {
            guard !archives.isEmpty else { throw ValidationError("give an archive to verify") }
            do {
                let summaries =
                    archives.count == 1
                    ? [try ArchiveReader(input: try FileArchiveInput(path: archives[0]), name: archives[0]).verifyAll()]
                    : try BackupRestorer.verifyChain(paths: archives)
                if json {
                    try Output.json(summaries.map { ArchiveReport($0) })
                    return
                }
                for (path, summary) in zip(archives, summaries) {
                    let h = summary.header
                    print(
                        "\(path): OK — \(h.kind.rawValue) backup \(h.archiveID) of \(h.volume) (\(Output.size(h.volumeSize))), "
                            + "\(Output.size(summary.dataBytes)) of data in \(summary.dataRecords) extents, "
                            + "\(summary.zeroRecords) zero ranges, split \(h.splitAt), \(h.drain), method \(h.method)")
                }
                if archives.count > 1 { print("chain OK: \(archives.count) archives") }
            } catch let error as ArchiveError {
                printError(error.message)
                throw ArgumentParser.ExitCode(ExitStatus.failure)
            }
        }
    }

    struct Restore: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Restore archives (a full one, then its increments in order) into a volume.")
        @OptionGroup var options: ClientOptions
        @Argument(help: "Archive files: a full archive, then its increments in order.") var archives: [String]
        @Option(name: .customLong("to"), help: "Volume to restore into (created if it does not exist).") var volume: String
        @Flag(help: "Overwrite an existing volume.") var force = false

        func run() async throws {
            guard !archives.isEmpty else { throw ValidationError("give an archive to restore") }
            try await runClient {
                let started = try await options.client.send(
                    .POST, APIPath.restores,
                    body: RestoreBackupRequest(archives: archives.map(absolutePath), volume: volume, force: force),
                    as: JobDTO.self)
                let job = try await waitForJob(started.id, client: options.client, quiet: options.json)
                if options.json { try Output.json(job) }
                guard job.state == "succeeded" else {
                    throw CLIError(message: job.message ?? "the restore \(job.state)", exitCode: ExitStatus.failure)
                }
                if !options.json { print(job.message ?? "restored") }
            }
        }
    }
}

/// The verify report in JSON.
struct ArchiveReport: Encodable {
    var archiveID: String
    var kind: String
    var baseArchiveID: String?
    var volume: String
    var volumeSize: UInt64
    var method: String
    var splitAt: String
    var drain: String
    var dataRecords: UInt64
    var zeroRecords: UInt64
    var dataBytes: UInt64
    var zeroBytes: UInt64
    var archiveBytes: UInt64

    init(_ summary: ArchiveSummary) {
        let h = summary.header
        archiveID = h.archiveID
        kind = h.kind.rawValue
        baseArchiveID = h.baseArchiveID
        volume = h.volume
        volumeSize = h.volumeSize
        method = h.method
        splitAt = h.splitAt
        drain = h.drain
        dataRecords = summary.dataRecords
        zeroRecords = summary.zeroRecords
        dataBytes = summary.dataBytes
        zeroBytes = summary.zeroBytes
        archiveBytes = summary.archiveBytes
    }
}

/// Polls a backup until it has succeeded or failed, drawing progress on stderr (unless quiet).
private func follow(_ id: String, options: ClientOptions, quiet: Bool) async throws -> BackupDTO {
    while true {
        let backup = try await options.client.get(APIPath.backup(id), as: BackupDTO.self)
        if !quiet {
            let detail =
                backup.phase == "draining"
                ? "\(backup.sessionsOnA.count) session(s) still on A" : backup.job.map(progressText) ?? ""
            FileHandleStandardError.write("\rbackup \(id): \(backup.phase) \(detail)   ")
        }
        if backup.phase == "succeeded" || backup.phase == "failed" {
            if !quiet { FileHandleStandardError.write("\n") }
            return backup
        }
        try await Task.sleep(nanoseconds: 200_000_000)
    }
}

private func show(_ backup: BackupDTO) {
    var fields: [(String, String)] = [
        ("backup", backup.id), ("volume", backup.volume), ("method", backup.method), ("kind", backup.kind),
        ("phase", backup.phase), ("archive", backup.archive), ("started", backup.startedAt),
        ("split at", backup.splitAt ?? "-"),
        ("sessions on A", backup.sessionsOnA.map { "\($0.id) (\($0.address))" }.joined(separator: ", ").ifEmpty("none")),
    ]
    if let base = backup.baseArchiveID { fields.append(("base", base)) }
    if let drain = backup.drain { fields.append(("drain", drain)) }
    if let left = backup.sessionsLeftOnA, !left.isEmpty { fields.append(("left on A", left.joined(separator: ", "))) }
    if let job = backup.job { fields.append(("job", "\(job.id) \(job.state) \(progressText(job))")) }
    if let bytes = backup.dataBytes { fields.append(("data", Output.size(bytes))) }
    if let bytes = backup.archiveBytes { fields.append(("archive size", Output.size(bytes))) }
    if let message = backup.message { fields.append(("message", message)) }
    Output.fields(fields)
}

/// Relative paths are the CLI's: the daemon gets absolute ones.
func absolutePath(_ path: String) -> String {
    path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
}

/// A FIFO the daemon writes the archive into while this process copies it to standard output.
private func makeFIFO() throws -> String {
    let path = NSTemporaryDirectory() + "cairn-backup-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).fifo"
    guard mkfifo(path, 0o600) == 0 else {
        throw CLIError(message: "cannot create a FIFO at \(path)", exitCode: ExitStatus.failure)
    }
    return path
}

/// Copies the FIFO to standard output. Opened without blocking and polled, calling `check` between
/// polls, so a backup that fails before it writes does not leave this process waiting forever.
private func copyToStandardOutput(fifo: String, check: () async throws -> Void) async throws {
    let input = open(fifo, O_RDONLY | O_NONBLOCK | O_CLOEXEC)
    guard input >= 0 else { throw CLIError(message: "cannot open \(fifo)", exitCode: ExitStatus.failure) }
    defer { close(input) }
    // Linux reports nothing on a FIFO no writer has opened yet: POLLIN means the archive has begun.
    var ready = pollfd(fd: input, events: Int16(POLLIN), revents: 0)
    while poll(&ready, 1, 200) == 0 || ready.revents == 0 {
        try await check()
        ready.revents = 0
    }
    _ = fcntl(input, F_SETFL, fcntl(input, F_GETFL) & ~O_NONBLOCK)
    var buffer = [UInt8](repeating: 0, count: 1 << 20)
    while true {
        let n = buffer.withUnsafeMutableBytes { read(input, $0.baseAddress!, $0.count) }
        if n < 0 && errno == EINTR { continue }
        guard n > 0 else { break }
        var done = 0
        while done < n {
            let m = buffer.withUnsafeBytes { write(1, $0.baseAddress! + done, n - done) }
            if m < 0 && errno == EINTR { continue }
            guard m > 0 else { throw CLIError(message: "cannot write to standard output", exitCode: ExitStatus.failure) }
            done += m
        }
    }
}

extension String {
    fileprivate func ifEmpty(_ replacement: String) -> String { isEmpty ? replacement : self }
}

extension BackupCommand {
    struct Export: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Serve archives (a full one, then its increments) read-only over NBD, e.g. for qemu-img convert.")
        @Argument(help: "Archive files: a full archive, then its increments in order.") var archives: [String]
        @Option(help: "Address to listen on.") var host = "127.0.0.1"
        @Option(help: "TCP port (0: any free port).") var port = 10809
        @Option(help: "Export name (default: the volume's name).") var name: String?
        @OptionGroup var tls: NBDTLSFlags

        func run() async throws {
            guard !archives.isEmpty else { throw ValidationError("give an archive to export") }
            let credentials = try tls.archiveExportTLS()
            let scheme = (credentials?.mode ?? .disabled) == .required ? "nbds" : "nbd"
            do {
                try await ArchiveExportServer.run(
                    paths: archives.map(absolutePath), host: host, port: port, name: name, tls: credentials,
                    logger: Logger(label: "cairn.backup-export")
                ) { bound, exportName in
                    FileHandleStandardError.write("serving \(scheme)://\(host):\(bound)/\(exportName) read-only\n")
                }
            } catch let error as ArchiveError {
                printError(error.message)
                throw ArgumentParser.ExitCode(ExitStatus.failure)
            }
        }
    }
}
