import ArgumentParser
import CairnAPI
import Foundation
import NIOHTTP1

extension PoolCommand {
    /// `cairn pool scrub [--wait]`
    struct Scrub: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Read every volume's data and verify it against its checksums.",
            discussion: """
                Runs in the background alongside host I/O. Damage is reported by volume and byte offset (and \
                by snapshot where only snapshots read the damaged data). --wait follows the job and prints the \
                report; without it, `cairn pool scrub --report` shows the last one. --repair then rewrites each \
                damaged block the live volume reads from its remote mirror's target, where the mirror is in the \
                mirrored state and the block's range is in sync. Exit status 6 when damage is found (and, with \
                --repair, left unrepaired).
                """)
        @OptionGroup var options: ClientOptions
        @Flag(help: "Wait for the scrub to finish, showing progress, and print its report.") var wait = false
        @Flag(help: "Only print the last scrub's report (start nothing).") var report = false
        @Flag(help: "With --wait or --report: repair the damage from mirror targets.") var repair = false

        func run() async throws {
            try await runClient {
                if !report {
                    var job = try JSONDecoder().decode(
                        JobDTO.self, from: try await options.client.send(.POST, APIPath.poolScrub, body: nil))
                    guard wait else {
                        if options.json { return try Output.json(job) }
                        return print("scrub: job \(job.id), \(job.state)")
                    }
                    job = try await waitForJob(job.id, client: options.client, quiet: options.json)
                    if job.state != "succeeded" {
                        if !options.json { print("scrub: job \(job.id), \(job.state)\(job.message.map { " (\($0))" } ?? "")") }
                        throw ArgumentParser.ExitCode(ExitStatus.failure)
                    }
                }
                let result = try await options.client.get(APIPath.poolScrub, as: ScrubReportDTO.self)
                if repair && !result.damage.isEmpty {
                    let repairs = try JSONDecoder().decode(
                        ScrubRepairDTO.self, from: try await options.client.send(.POST, APIPath.poolScrubRepair, body: nil))
                    if options.json {
                        try Output.json(repairs)
                    } else {
                        for block in repairs.blocks {
                            let outcome = block.repaired ? "repaired from the mirror target" : "NOT repaired: \(block.detail ?? "-")"
                            print("volume \(block.volume) offset \(block.offset) length \(block.length): \(outcome)")
                        }
                    }
                    if repairs.blocks.contains(where: { !$0.repaired }) { throw ArgumentParser.ExitCode(ExitStatus.unhealthy) }
                    return
                }
                if options.json {
                    try Output.json(result)
                } else {
                    Output.fields([
                        ("result", result.damage.isEmpty ? "no damage" : "DAMAGE FOUND"),
                        ("state", result.finished ? "finished" : "running"),
                        ("verified", Output.size(result.verifiedBytes)),
                        ("without checksums", Output.size(result.uncheckedBytes)),
                        ("damaged blocks", "\(result.damage.count)"),
                    ])
                    for damage in result.damage {
                        let seen = damage.live ? "live" : "only snapshots"
                        let snapshots = damage.snapshots.isEmpty ? "" : " snapshots \(damage.snapshots.joined(separator: ","))"
                        print("damaged: volume \(damage.volume) offset \(damage.offset) length \(damage.length) (\(seen)\(snapshots); slot \(damage.slot))")
                    }
                }
                if !result.damage.isEmpty { throw ArgumentParser.ExitCode(ExitStatus.unhealthy) }
            }
        }
    }
}
