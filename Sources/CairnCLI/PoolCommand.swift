import ArgumentParser
import CairnAPI
import Foundation
import NIOHTTP1

/// `cairn pool ...`
struct PoolCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pool",
        abstract: "Pool status, consistency check and data scrub.",
        subcommands: [Status.self, Check.self, Scrub.self, Store.self])

    struct Store: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Stores: other disks that hold data volumes preserve for their snapshots.",
            subcommands: [Add.self, List.self])

        struct Add: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Register a directory (created if missing).")
            @OptionGroup var options: ClientOptions
            @Argument var name: String
            @Argument(help: "Absolute path, usually on another disk.") var path: String

            func run() async throws {
                try await runClient {
                    let store = try await options.client.send(
                        .POST, APIPath.stores, body: StoreDTO(name: name, path: path), as: StoreDTO.self)
                    if options.json { try Output.json(store) } else { print("store \(store.name) at \(store.path)") }
                }
            }
        }

        struct List: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "List stores.")
            @OptionGroup var options: ClientOptions

            func run() async throws {
                try await runClient {
                    let stores = try await options.client.get(APIPath.stores, as: [StoreDTO].self)
                    if options.json { return try Output.json(stores) }
                    Output.table(["STORE", "PATH"], stores.map { [$0.name, $0.path] })
                }
            }
        }
    }

    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Space, capabilities and health of the pool.")
        @OptionGroup var options: ClientOptions

        func run() async throws {
            try await runClient {
                let status = try await options.client.get(APIPath.pool, as: PoolStatusDTO.self)
                if options.json { return try Output.json(status) }
                var pairs: [(String, String)] = [
                    ("pool", status.poolID),
                    ("data directory", status.dataDirectory),
                    ("nbd", status.nbdAddress ?? "-"),
                    ("volumes", "\(status.volumeCount)"),
                    ("provisioned", Output.size(status.provisionedBytes)),
                    ("used", Output.size(status.usedBytes)),
                    ("shared", Output.size(status.sharedBytes)),
                    ("pending free", Output.size(status.pendingFreeBytes)),
                    ("on disk", Output.size(status.fileBytes)),
                    ("filesystem free", status.filesystemAvailableBytes.map(Output.size) ?? "unknown"),
                    ("copy offload", status.copyMethod),
                    ("data writes", status.dataWrites ?? "-"),
                    ("written / copied", "\(Output.size(status.bytesWritten)) / \(Output.size(status.bytesCopied))"),
                ]
                if let checksums = status.dataChecksums {
                    let mismatches = status.checksumMismatches ?? 0
                    let unchecked = status.uncheckedData == true ? "; data from before checksums read unchecked until rewritten" : ""
                    pairs.append(("data checksums", checksums ? "crc32c per 4 KiB, \(mismatches) mismatches\(unchecked)" : "off"))
                }
                pairs.append(("health", status.failure.map { "\(status.health): \($0)" } ?? status.health))
                pairs += Self.backendFields(status.backend)
                Output.fields(pairs)
            }
        }
    }

    struct Check: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Verify metadata against the chunk store; report leaks and corruption.",
            discussion: "Exit status 6 when problems are found. --repair gives leaked space back; nothing else is changed.")
        @OptionGroup var options: ClientOptions
        @Flag(help: "Punch out space held by unreferenced slots.") var repair = false

        func run() async throws {
            try await runClient {
                let report = try await options.client.send(
                    .POST, APIPath.poolCheck + (repair ? "?repair=true" : ""), body: nil)
                let check = try JSONDecoder().decode(PoolCheckDTO.self, from: report)
                if options.json {
                    try Output.json(check)
                } else {
                    Output.fields([
                        ("result", check.healthy ? "healthy" : "PROBLEMS FOUND"),
                        ("volumes", "\(check.volumes)"),
                        ("snapshots", "\(check.snapshots)"),
                        ("mappings", "\(check.mappings)"),
                        ("referenced slots", "\(check.referencedSlots)"),
                        ("leaked slots", "\(check.leakedSlots) (\(Output.size(check.leakedBytes)))"),
                        ("repaired slots", "\(check.repairedSlots)"),
                    ])
                    for error in check.errors { print("error: \(error)") }
                }
                if !check.healthy { throw ArgumentParser.ExitCode(ExitStatus.unhealthy) }
            }
        }
    }
}
