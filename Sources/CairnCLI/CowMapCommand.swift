import ArgumentParser
import CairnAPI
import NBDClient
import NBDProtocol

/// `cairn cow-map VOLUME|NBD_URI [--offset OFF] [--length N]`
struct CowMapCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cow-map",
        abstract: "Show which ranges of a volume are shared (a write there copies) over NBD.",
        discussion: """
            Reads the x-cairn:copy-on-write metadata context (docs/NBD-EXTENSIONS.md): a range is shared \
            when its chunk's data is also a snapshot's, a clone parent's or a deduplicated twin's, so the \
            next write to it copies the chunk first (which `cairn copy-and-write` does inside the array).
            """)

    @OptionGroup var options: ClientOptions
    @Argument(help: "A volume name (looked up through the daemon) or an nbd://HOST[:PORT]/VOLUME URI (nbds://...?tls-certificates=DIR for TLS).")
    var volume: String
    @Option(help: "Start of the range (default 0).") var offset = "0"
    @Option(help: "Length of the range (default: to the end).") var length: String?

    struct Extent: Codable, Sendable {
        var offset: UInt64
        var length: UInt64
        var shared: Bool
    }

    func run() async throws {
        try await runClient {
            let start = try parseSize(offset, what: "offset")
            let requested = try length.map { try parseSize($0, what: "length") }
            let uri = try await NBDVolume.resolve(volume, options: options).uri
            let extents = try await withNBDClient(uri, metaContexts: [NBDCopyOnWrite.contextName]) { client in
                guard client.supportsCopyAndWrite else {
                    throw CLIError.copyOnWriteNotOffered(uri)
                }
                let end = min(client.size, requested.map { start + $0 } ?? client.size)
                return try await Self.map(client, from: start, to: end)
            }
            if options.json { return try Output.json(extents) }
            Output.table(
                ["OFFSET", "LENGTH", "STATE"],
                extents.map { ["\($0.offset)", ByteSize.format($0.length), $0.shared ? "shared" : "unshared"] })
        }
    }

    /// Asks again from where each answer stopped (the server may answer less than asked) and merges
    /// neighbours in the same state.
    static func map(_ client: NBDClient, from start: UInt64, to end: UInt64) async throws -> [Extent] {
        var extents: [Extent] = []
        var position = start
        while position < end {
            let descriptors = try await client.copyOnWriteStatus(offset: position, length: end - position)
            for descriptor in descriptors where position < end {
                let length = min(descriptor.length, end - position)
                let shared = NBDCopyOnWriteState(rawValue: descriptor.flags).contains(.shared)
                if let last = extents.last, last.shared == shared {
                    extents[extents.count - 1].length += length
                } else {
                    extents.append(Extent(offset: position, length: length, shared: shared))
                }
                position += length
            }
        }
        return extents
    }
}
