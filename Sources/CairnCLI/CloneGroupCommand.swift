import ArgumentParser
import CairnAPI
import Foundation
import NIOHTTP1

/// `cairn clone ...`: clone groups: full copies of a source volume, kept synchronized or
/// fractured as point-in-time copies, and restored back into the source.
struct CloneGroupCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "clone",
        abstract: "Clone groups: full copies of a volume, sync, fracture, reverse sync and protected restore.",
        discussion: """
            A clone is a separate volume holding a full copy of its source. While synchronized, host writes \
            to the source are mirrored to it; once fractured it is a point-in-time copy, and a delta map \
            records the extents where source and clone differ, so sync and restore copy only those. \
            `restore --protected` puts the clone's data back into the source while hosts keep using it \
            (copy on demand) and leaves the clone unchanged. Jobs run in the background: --wait follows \
            them, `cairn job cancel ID` pauses them, the same command resumes them.
            """,
        subcommands: [
            Add.self, List.self, Show.self, Remove.self, Fracture.self, Sync.self, ReverseSync.self, Restore.self,
        ])

    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create a clone of SOURCE and synchronize it fully in the background.")
        @OptionGroup var options: ClientOptions
        @Argument(help: "The source volume.") var source: String
        @Option(help: "Name of the new clone volume.") var name: String
        @Option(help: "Bytes per delta-map bit, a power of two from 4K to 64M (default 64K; fixed per group).")
        var extentSize: String?
        @Option(help: "Pool for the clone: only the source's own pool is supported (one pool per daemon).")
        var pool: String?
        @Flag(help: "Wait for the initial sync to finish, showing progress.") var wait = false

        func run() async throws {
            let extent = try extentSize.map { try parseSize($0, what: "extent size") }
            try await runClient {
                let clone = try await options.client.send(
                    .POST, APIPath.clones,
                    body: AddCloneRequest(source: source, name: name, extentSize: extent, pool: pool), as: CloneDTO.self)
                try await finish(clone, wait: wait, options: options)
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List clones (of one source, or all).")
        @OptionGroup var options: ClientOptions
        @Argument(help: "Only the clones of this source.") var source: String?

        func run() async throws {
            try await runClient {
                let path = APIPath.clones + (source.map { "?" + APIPath.query("source", $0) } ?? "")
                let clones = try await options.client.get(path, as: [CloneDTO].self)
                if options.json { return try Output.json(clones) }
                Output.table(
                    ["NAME", "SOURCE", "STATE", "DIFFERENT", "EXTENT", "JOB"],
                    clones.map {
                        [
                            $0.name, $0.source, $0.state, "\($0.deltaExtents)/\($0.extentCount)",
                            Output.size($0.extentSize), $0.job.map { "\($0.id) \($0.state)" } ?? "-",
                        ]
                    })
            }
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show one clone.")
        @OptionGroup var options: ClientOptions
        @Argument var name: String

        func run() async throws {
            try await runClient {
                let clone = try await options.client.get(APIPath.clone(name), as: CloneDTO.self)
                if options.json { try Output.json(clone) } else { show(clone) }
            }
        }
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Take a clone out of its group; it stays as an ordinary volume unless --delete-volume.")
        @OptionGroup var options: ClientOptions
        @Argument var name: String
        @Flag(help: "Delete the clone's volume too.") var deleteVolume = false

        func run() async throws {
            try await runClient {
                let query = deleteVolume ? "?delete-volume=true" : ""
                try await options.client.send(.DELETE, APIPath.clone(name) + query, body: nil)
                if !options.json { print("clone '\(name)' removed\(deleteVolume ? " and deleted" : "")") }
            }
        }
    }

    struct Fracture: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Stop mirroring: the clone becomes a point-in-time copy of its source.")
        @OptionGroup var options: ClientOptions
        @Argument var name: String

        func run() async throws {
            try await runClient {
                let clone = try await options.client.send(
                    .POST, APIPath.cloneAction(name, "fracture"), body: [String: String](), as: CloneDTO.self)
                if options.json { try Output.json(clone) } else { show(clone) }
            }
        }
    }

    struct Sync: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Bring a fractured clone up to date with its source (copies only the delta map's extents).")
        @OptionGroup var options: ClientOptions
        @Argument var name: String
        @Flag(help: "Wait for the job to finish, showing progress.") var wait = false

        func run() async throws {
            try await runClient { try await action("sync", name: name, wait: wait, options: options) }
        }
    }

    struct ReverseSync: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "reverse-sync",
            abstract: "Update the source from a fractured clone; source writes are mirrored to the clone meanwhile.")
        @OptionGroup var options: ClientOptions
        @Argument var name: String
        @Flag(help: "Wait for the job to finish, showing progress.") var wait = false

        func run() async throws {
            try await runClient { try await action("reverse-sync", name: name, wait: wait, options: options) }
        }
    }

    struct Restore: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Protected restore: the source gets the clone's data at once (copy on demand); the clone is "
                + "never modified, and host writes made meanwhile become its new delta map.")
        @OptionGroup var options: ClientOptions
        @Argument var name: String
        @Flag(help: "The protected restore (required: the clone stays unchanged).") var protected = false
        @Flag(help: "Wait for the job to finish, showing progress.") var wait = false

        func run() async throws {
            try await runClient {
                let clone = try await options.client.send(
                    .POST, APIPath.cloneAction(name, "restore"), body: RestoreCloneRequest(protected: protected),
                    as: CloneDTO.self)
                try await finish(clone, wait: wait, options: options)
            }
        }
    }
}

/// POSTs a job-starting action and reports (or follows) the job.
private func action(_ verb: String, name: String, wait: Bool, options: ClientOptions) async throws {
    let clone = try await options.client.send(
        .POST, APIPath.cloneAction(name, verb), body: [String: String](), as: CloneDTO.self)
    try await finish(clone, wait: wait, options: options)
}

/// Prints a clone after a job-starting command; with --wait follows the job first.
private func finish(_ started: CloneDTO, wait: Bool, options: ClientOptions) async throws {
    var clone = started
    if wait, let job = clone.job {
        let ended = try await waitForJob(job.id, client: options.client, quiet: options.json)
        clone = try await options.client.get(APIPath.clone(clone.name), as: CloneDTO.self)
        if ended.state != "succeeded" {
            if options.json { try Output.json(clone) } else { show(clone) }
            throw CLIError(
                message: "job \(ended.id) \(ended.state): \(ended.message ?? "")",
                exitCode: ended.state == "failed" ? ExitStatus.failure : ExitStatus.conflict)
        }
    }
    if options.json { try Output.json(clone) } else { show(clone) }
}

private func show(_ clone: CloneDTO) {
    var fields: [(String, String)] = [
        ("clone", clone.name), ("source", clone.source), ("state", clone.state),
        ("different", "\(clone.deltaExtents) of \(clone.extentCount) extents of \(Output.size(clone.extentSize))"),
    ]
    if let restore = clone.restoreMapExtents { fields.append(("written during restore", "\(restore) extents")) }
    if let job = clone.job { fields.append(("job", "\(job.id) \(job.kind) \(job.state) \(progressText(job))")) }
    fields.append(("created", clone.createdAt))
    Output.fields(fields)
}
