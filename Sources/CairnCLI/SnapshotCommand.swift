import ArgumentParser
import CairnAPI
import Foundation
import NIOHTTP1

/// "volume@snapshot" on the command line.
struct SnapshotPath: ExpressibleByArgument {
    var volume: String
    var snapshot: String

    init?(argument: String) {
        let parts = argument.split(separator: "@", maxSplits: 1, omittingEmptySubsequences: false)
        guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else { return nil }
        volume = String(parts[0])
        snapshot = String(parts[1])
    }

    var description: String { "\(volume)@\(snapshot)" }
}

/// `cairn snapshot ...`
struct SnapshotCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "snapshot",
        abstract: "Point-in-time snapshots: create, list, show, delete, roll back, diff.",
        subcommands: [Create.self, List.self, Show.self, Delete.self, Rollback.self, Diff.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Take a snapshot (instant; it holds every write acknowledged before the command).")
        @OptionGroup var options: ClientOptions
        @Argument(help: "VOLUME@NAME") var path: SnapshotPath

        func run() async throws {
            try await runClient {
                let snapshot = try await options.client.send(
                    .POST, APIPath.snapshots(of: path.volume), body: CreateSnapshotRequest(name: path.snapshot),
                    as: SnapshotDTO.self)
                if options.json { try Output.json(snapshot) } else { showSnapshot(snapshot) }
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List snapshots (of one volume, or all).")
        @OptionGroup var options: ClientOptions
        @Argument(help: "Volume (default: every volume).") var volume: String?

        func run() async throws {
            try await runClient {
                let path = volume.map { APIPath.snapshots(of: $0) } ?? APIPath.allSnapshots
                let snapshots = try await options.client.get(path, as: [SnapshotDTO].self)
                if options.json { return try Output.json(snapshots) }
                Output.table(
                    ["SNAPSHOT", "SIZE", "CREATED", "SESSIONS", "CLONES"],
                    snapshots.map {
                        [
                            "\($0.volume)@\($0.name)", Output.size($0.size), $0.createdAt, "\($0.attachments)",
                            $0.clones.joined(separator: ","),
                        ]
                    })
            }
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show one snapshot.")
        @OptionGroup var options: ClientOptions
        @Argument(help: "VOLUME@NAME") var path: SnapshotPath

        func run() async throws {
            try await runClient {
                let snapshot = try await options.client.get(
                    APIPath.snapshot(path.volume, path.snapshot), as: SnapshotDTO.self)
                if options.json { try Output.json(snapshot) } else { showSnapshot(snapshot) }
            }
        }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Delete a snapshot; its space is reclaimed in the background.",
            discussion: "Refused while clones depend on it or sessions read it. --wait follows the reclaim job.")
        @OptionGroup var options: ClientOptions
        @Argument(help: "VOLUME@NAME") var path: SnapshotPath
        @Flag(help: "Wait for the space to be reclaimed, showing progress.") var wait = false

        func run() async throws {
            try await runClient {
                let deletion = try await options.client.send(
                    .DELETE, APIPath.snapshot(path.volume, path.snapshot), body: nil)
                let result = try JSONDecoder().decode(SnapshotDeletionDTO.self, from: deletion)
                var job = result.job
                if wait, let started = job {
                    job = try await waitForJob(started.id, client: options.client, quiet: options.json)
                }
                if options.json { return try Output.json(SnapshotDeletionDTO(deleted: result.deleted, job: job)) }
                print("deleted snapshot \(result.deleted)")
                if let job { print("reclaim: job \(job.id), \(job.state)\(job.message.map { " (\($0))" } ?? "")") }
            }
        }
    }

    struct Rollback: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Return a volume to a snapshot.",
            discussion: """
                Refused while the volume is exported, or when newer snapshots exist (they would be destroyed), \
                unless --force.
                """)
        @OptionGroup var options: ClientOptions
        @Argument(help: "VOLUME@NAME") var path: SnapshotPath
        @Flag(help: "Roll back even with sessions attached, destroying newer snapshots.") var force = false

        func run() async throws {
            try await runClient {
                let data = try await options.client.send(
                    .POST, APIPath.rollback(path.volume, path.snapshot) + (force ? "?force=true" : ""), body: nil)
                let volume = try JSONDecoder().decode(VolumeDTO.self, from: data)
                if options.json { try Output.json(volume) } else { print("rolled \(path.volume) back to \(path)") }
            }
        }
    }

    struct Diff: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List the extents that changed between two snapshots (or a snapshot and the live volume).",
            discussion: "Computed from metadata only; no data is read.")
        @OptionGroup var options: ClientOptions
        @Argument(help: "VOLUME@OLDER") var from: SnapshotPath
        @Argument(help: "VOLUME@NEWER (default: the live volume).") var to: SnapshotPath?

        func validate() throws {
            if let to, to.volume != from.volume {
                throw ValidationError("both snapshots must belong to the same volume")
            }
        }

        func run() async throws {
            try await runClient {
                var query = "?" + APIPath.query("from", from.snapshot)
                if let to { query += "&" + APIPath.query("to", to.snapshot) }
                let changes = try await options.client.get(APIPath.changes(of: from.volume) + query, as: ChangesDTO.self)
                if options.json { return try Output.json(changes) }
                Output.table(
                    ["OFFSET", "LENGTH"], changes.extents.map { ["\($0.offset)", "\($0.length)"] })
                print("\(changes.extents.count) extents, \(Output.size(changes.changedBytes)) changed")
            }
        }
    }
}

/// `cairn volume clone VOL@SNAP NEW`
struct CloneCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "clone",
        abstract: "Create a writable clone of a snapshot (instant; it shares the snapshot's data).")
    @OptionGroup var options: ClientOptions
    @Argument(help: "VOLUME@SNAPSHOT") var path: SnapshotPath
    @Argument(help: "Name of the new volume.") var name: String

    func run() async throws {
        try await runClient {
            let volume = try await options.client.send(
                .POST, APIPath.clone(path.volume, path.snapshot), body: CloneRequest(name: name), as: VolumeDTO.self)
            if options.json { try Output.json(volume) } else { show(volume) }
        }
    }
}

func showSnapshot(_ snapshot: SnapshotDTO) {
    var pairs: [(String, String)] = [
        ("snapshot", "\(snapshot.volume)@\(snapshot.name)"),
        ("size", "\(Output.size(snapshot.size)) (\(snapshot.size) bytes)"),
        ("created", snapshot.createdAt),
        ("sessions", "\(snapshot.attachments)"),
        ("clones", snapshot.clones.isEmpty ? "-" : snapshot.clones.joined(separator: ", ")),
    ]
    if let uri = snapshot.exportURI { pairs.append(("export", "\(uri) (read-only)")) }
    if let creation = snapshot.creation {
        pairs.append(
            (
                "took",
                String(
                    format: "%.2f ms (writes paused %.3f ms)", Double(creation.totalMicroseconds) / 1000,
                    Double(creation.writesPausedMicroseconds) / 1000)
            ))
    }
    Output.fields(pairs)
}
