import ArgumentParser
import CairnAPI
import Foundation
import NIOHTTP1

/// `cairn job ...`
struct JobCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "job",
        abstract: "Background jobs (snapshot reclaim, dedup): progress, state, cancel.",
        subcommands: [List.self, Show.self, Cancel.self])

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List running and recent jobs.")
        @OptionGroup var options: ClientOptions

        func run() async throws {
            try await runClient {
                let jobs = try await options.client.get(APIPath.jobs, as: [JobDTO].self)
                if options.json { return try Output.json(jobs) }
                Output.table(
                    ["ID", "KIND", "TARGET", "STATE", "PROGRESS", "MESSAGE"],
                    jobs.map { ["\($0.id)", $0.kind, $0.target, $0.state, progressText($0), $0.message ?? ""] })
            }
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show one job; --wait follows it to the end.")
        @OptionGroup var options: ClientOptions
        @Argument var id: UInt64
        @Flag(help: "Wait for the job to finish, showing progress.") var wait = false

        func run() async throws {
            try await runClient {
                let job =
                    wait
                    ? try await waitForJob(id, client: options.client, quiet: options.json)
                    : try await options.client.get(APIPath.job(id), as: JobDTO.self)
                if options.json { return try Output.json(job) }
                Output.fields([
                    ("job", "\(job.id)"), ("kind", job.kind), ("target", job.target), ("state", job.state),
                    ("progress", progressText(job)), ("started", job.startedAt), ("finished", job.finishedAt ?? "-"),
                    ("message", job.message ?? "-"),
                ])
                if job.state == "failed" { throw ArgumentParser.ExitCode(ExitStatus.failure) }
            }
        }
    }

    struct Cancel: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Ask a running job to stop.")
        @OptionGroup var options: ClientOptions
        @Argument var id: UInt64

        func run() async throws {
            try await runClient {
                let job = try await options.client.send(.POST, APIPath.cancelJob(id), body: Data?.none)
                let decoded = try JSONDecoder().decode(JobDTO.self, from: job)
                if options.json { try Output.json(decoded) } else { print("cancel requested for job \(id)") }
            }
        }
    }
}

func progressText(_ job: JobDTO) -> String { job.progressSummary }

/// Polls a job until it ends, drawing a progress line on stderr (unless quiet).
func waitForJob(_ id: UInt64, client: APIClient, quiet: Bool) async throws -> JobDTO {
    while true {
        let job = try await client.get(APIPath.job(id), as: JobDTO.self)
        if !quiet { FileHandleStandardError.write("\r\(job.kind) \(job.target): \(progressText(job))   ") }
        if job.state != "running" {
            if !quiet { FileHandleStandardError.write("\n") }
            return job
        }
        try await Task.sleep(nanoseconds: 200_000_000)
    }
}
