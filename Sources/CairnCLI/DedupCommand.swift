import ArgumentParser
import CairnAPI
import Foundation
import NIOHTTP1

/// `cairn dedup [VOL...]`
struct DedupCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dedup",
        abstract: "Share identical chunks across volumes and their snapshots.",
        discussion: """
            Hashes every chunk version (SHA-256), compares the bytes of matches under the chunk locks and \
            makes them share one copy. Runs in the background alongside host I/O; a later write to a shared \
            chunk gets its own copy. --wait follows the job and prints what was saved.
            """)
    @OptionGroup var options: ClientOptions
    @Argument(help: "Volumes to deduplicate (default: all).") var volumes: [String] = []
    @Flag(help: "Wait for the job to finish, showing progress.") var wait = false

    func run() async throws {
        try await runClient {
            var job = try await options.client.send(.POST, APIPath.dedup, body: DedupRequest(volumes: volumes), as: JobDTO.self)
            if wait { job = try await waitForJob(job.id, client: options.client, quiet: options.json) }
            if options.json { return try Output.json(job) }
            print("dedup: job \(job.id), \(job.state)\(job.message.map { " (\($0))" } ?? "")")
            if job.state == "failed" { throw ArgumentParser.ExitCode(ExitStatus.failure) }
        }
    }
}
