import ArgumentParser
import CairnAPI
import Foundation
import NIOHTTP1

/// `cairn volume ...`
struct VolumeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "volume",
        abstract: "Create, list, show, resize, rename, delete and clone thin volumes.",
        subcommands: [
            Create.self, List.self, Show.self, Resize.self, Rename.self, Delete.self, CloneCommand.self, Preserve.self,
        ])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a thin volume (it costs no space until written).")
        @OptionGroup var options: ClientOptions
        @Argument(help: "Volume name: letters, digits, '.', '_', '-'.") var name: String
        @Argument(help: "Size, e.g. 10G, 512M, 1T.") var size: String
        @Option(help: "Chunk size, a power of two from 4K to 4M (default 64K).") var chunkSize: String?
        @Option(help: "Store (another disk) that data preserved for snapshots is moved to.") var preserveStore: String?

        func run() async throws {
            let bytes = try parseSize(size)
            let chunk = try chunkSize.map { try parseSize($0, what: "chunk size") }
            try await runClient {
                let volume = try await options.client.send(
                    .POST, APIPath.volumes,
                    body: CreateVolumeRequest(
                        name: name, size: bytes, chunkSize: chunk.map { UInt32(clamping: $0) },
                        preserveStore: preserveStore),
                    as: VolumeDTO.self)
                if options.json { try Output.json(volume) } else { show(volume) }
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List volumes.")
        @OptionGroup var options: ClientOptions

        func run() async throws {
            try await runClient {
                let volumes = try await options.client.get(APIPath.volumes, as: [VolumeDTO].self)
                if options.json { return try Output.json(volumes) }
                Output.table(
                    ["NAME", "SIZE", "ALLOCATED", "CHUNK", "SNAPSHOTS", "SESSIONS", "EXPORT"],
                    volumes.map {
                        [
                            $0.name, Output.size($0.size), Output.size($0.allocatedBytes),
                            Output.size(UInt64($0.chunkSize)), "\($0.snapshotCount)", "\($0.attachments)",
                            $0.exportURI ?? "",
                        ]
                    })
            }
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show one volume.")
        @OptionGroup var options: ClientOptions
        @Argument var name: String

        func run() async throws {
            try await runClient {
                let volume = try await options.client.get(APIPath.volume(name), as: VolumeDTO.self)
                if options.json { try Output.json(volume) } else { show(volume) }
            }
        }
    }

    struct Resize: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Grow or shrink a volume.",
            discussion: "Shrinking below written data is refused unless --force, which discards that data.")
        @OptionGroup var options: ClientOptions
        @Argument var name: String
        @Argument(help: "New size, e.g. 20G.") var size: String
        @Flag(help: "Discard data past the new end; shrink even with sessions attached.") var force = false

        func run() async throws {
            let bytes = try parseSize(size)
            try await runClient {
                let volume = try await options.client.send(
                    .PATCH, APIPath.volume(name), body: UpdateVolumeRequest(size: bytes, force: force),
                    as: VolumeDTO.self)
                if options.json { try Output.json(volume) } else { show(volume) }
            }
        }
    }

    struct Rename: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Rename a volume (attached sessions keep working).")
        @OptionGroup var options: ClientOptions
        @Argument var name: String
        @Argument var newName: String

        func run() async throws {
            try await runClient {
                let volume = try await options.client.send(
                    .PATCH, APIPath.volume(name), body: UpdateVolumeRequest(name: newName), as: VolumeDTO.self)
                if options.json { try Output.json(volume) } else { show(volume) }
            }
        }
    }

    struct Preserve: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Send the data a volume preserves for its snapshots to a store, or keep it in the pool.",
            discussion: "Takes effect for chunks first overwritten from now on (the LUN map of the COW-offload design).")
        @OptionGroup var options: ClientOptions
        @Argument var name: String
        @Option(help: "Store name (see `cairn pool store list`).") var store: String?
        @Flag(help: "Keep preserved data in the pool.") var none = false

        func validate() throws {
            guard (store != nil) != none else { throw ValidationError("give either --store NAME or --none") }
        }

        func run() async throws {
            try await runClient {
                let volume = try await options.client.send(
                    .PATCH, APIPath.volume(name), body: UpdateVolumeRequest(preserveStore: store ?? ""),
                    as: VolumeDTO.self)
                if options.json { try Output.json(volume) } else { show(volume) }
            }
        }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Delete a volume and give its space back.",
            discussion: "Refused while sessions are attached or snapshots exist, unless --force.")
        @OptionGroup var options: ClientOptions
        @Argument var name: String
        @Flag(help: "Delete even with sessions attached or snapshots present.") var force = false

        func run() async throws {
            try await runClient {
                try await options.client.send(.DELETE, APIPath.volume(name) + (force ? "?force=true" : ""), body: nil)
                if options.json { try Output.json(["deleted": name]) } else { print("deleted volume \(name)") }
            }
        }
    }
}

func show(_ volume: VolumeDTO) {
    var pairs: [(String, String)] = [
        ("name", volume.name),
        ("size", "\(Output.size(volume.size)) (\(volume.size) bytes)"),
        ("allocated", "\(Output.size(volume.allocatedBytes)) (\(volume.allocatedBytes) bytes)"),
        ("chunk size", Output.size(UInt64(volume.chunkSize))),
        ("snapshots", "\(volume.snapshotCount)"),
        ("sessions", "\(volume.attachments)"),
        ("created", volume.createdAt),
    ]
    if let origin = volume.origin { pairs.append(("origin", origin)) }
    if let store = volume.preserveStore { pairs.append(("preserve store", store)) }
    if let uri = volume.exportURI { pairs.append(("export", uri)) }
    Output.fields(pairs)
}
