import ArgumentParser
import Foundation
import NBDClient
import NBDProtocol
import NIOCore

/// `cairn copy-and-write VOLUME|NBD_URI --source OFF --target OFF [--chunk-size SIZE] [--offset OFF]
/// (--data-file FILE | --pattern BYTE --length N) [--fua] [--host-side] [--count N]`
struct CopyAndWriteCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "copy-and-write",
        abstract: "Copy a chunk inside the array while writing into it (COPY_AND_WRITE over NBD).",
        discussion: """
            The chunk at --target becomes a copy of the chunk at --source with the buffer written --offset \
            bytes in. Only the buffer crosses the network: the array copies the chunk itself, in one round \
            trip, and afterwards the target needs no further copy-on-write (see `cairn cow-map`). Needs the \
            x-cairn:copy-on-write NBD extension (docs/NBD-EXTENSIONS.md), which live volumes offer.

            --host-side does the same the way a host without the extension must: READ the source chunk, \
            WRITE it to the target, WRITE the buffer (three round trips), to compare round trips, bytes on \
            the wire and latency.
            """)

    @OptionGroup var options: ClientOptions
    @Argument(help: "A volume name (looked up through the daemon) or an nbd://HOST[:PORT]/VOLUME URI (nbds://...?tls-certificates=DIR for TLS).")
    var volume: String
    @Option(help: "Offset of the chunk to copy (chunk-aligned; K, M, G suffixes).") var source: String
    @Option(help: "Offset of the chunk to create (chunk-aligned).") var target: String
    @Option(help: "Copy-on-write chunk size (default: the volume's; required with a URI).") var chunkSize: String?
    @Option(name: .customLong("offset"), help: "Where the buffer goes inside the chunk.") var bufferOffset = "0"
    @Option(help: "File whose contents are the buffer.") var dataFile: String?
    @Option(help: "Byte to fill the buffer with (0xab or 171); needs --length.") var pattern: String?
    @Option(help: "Buffer length with --pattern, e.g. 4K.") var length: String?
    @Flag(help: "Force unit access: durable before the reply.") var fua = false
    @Flag(help: "READ + WRITE + WRITE from this host instead of one COPY_AND_WRITE, for comparison.")
    var hostSide = false
    @Option(help: "Repeat over N consecutive chunks (source and target advance a chunk each time).") var count = 1

    func validate() throws {
        guard (dataFile == nil) != (pattern == nil) else {
            throw ValidationError("give either --data-file or --pattern")
        }
        guard (pattern == nil) == (length == nil) else { throw ValidationError("--pattern and --length go together") }
        guard count >= 1 else { throw ValidationError("--count must be at least 1") }
    }

    func run() async throws {
        try await runClient {
            let resolved = try await NBDVolume.resolve(volume, options: options)
            guard
                let copySize = try chunkSize.map({ try parseSize($0, what: "chunk size") })
                    ?? resolved.chunkSize.map(UInt64.init)
            else { throw ValidationError("--chunk-size is required with an nbd:// URI") }
            let operation = try CopyAndWriteOperation(
                source: parseSize(source, what: "source offset"),
                target: parseSize(target, what: "target offset"),
                copySize: UInt32(exactly: copySize) ?? 0,
                buffer: try buffer(),
                bufferOffset: UInt32(exactly: parseSize(bufferOffset, what: "offset")) ?? .max,
                fua: fua)
            let uri = resolved.uri
            let contexts = hostSide ? [] : [NBDCopyOnWrite.contextName]
            let report = try await withNBDClient(uri, metaContexts: contexts) { client in
                if !hostSide, !client.supportsCopyAndWrite {
                    throw CLIError.copyOnWriteNotOffered(uri)
                }
                return try await operation.measure(on: client, hostSide: hostSide, count: count)
            }
            if options.json { return try Output.json(report) }
            report.print()
        }
    }

    private func buffer() throws -> ByteBuffer {
        if let dataFile {
            guard let data = FileManager.default.contents(atPath: dataFile) else {
                throw ValidationError("cannot read --data-file \(dataFile)")
            }
            return ByteBuffer(bytes: data)
        }
        let size = try parseSize(length ?? "0", what: "length")
        guard size <= UInt64(NBDLimits.maximumPayload) else { throw ValidationError("--length is above 32M") }
        return ByteBuffer(repeating: try parseByte(pattern ?? "0"), count: Int(size))
    }
}

/// One COPY_AND_WRITE, done either way, with what it cost on the wire.
struct CopyAndWriteOperation: Sendable {
    var source: UInt64
    var target: UInt64
    var copySize: UInt32
    var buffer: ByteBuffer
    var bufferOffset: UInt32
    var fua: Bool

    /// Runs the operation on `count` consecutive chunks, one at a time so each is a clean sequence of
    /// round trips, and each meets a chunk in the state the first one was in (shared, say) rather than
    /// one the previous run just unshared.
    func measure(on client: NBDClient, hostSide: Bool, count: Int) async throws -> CopyAndWriteReport {
        let before = client.statistics
        var latencies: [Duration] = []
        for run in 0..<UInt64(count) {
            var step = self
            step.source += run * UInt64(copySize)
            step.target += run * UInt64(copySize)
            let start = ContinuousClock.now
            if hostSide { try await step.runHostSide(client) } else { try await step.runOffloaded(client) }
            latencies.append(ContinuousClock.now - start)
        }
        let wire = client.statistics.since(before)
        return CopyAndWriteReport(
            mode: hostSide ? "host-side" : "copy-and-write", source: source, target: target, chunkSize: copySize,
            bufferOffset: bufferOffset, bufferBytes: buffer.readableBytes, runs: count,
            roundTrips: wire.requests / count, bytesSent: wire.bytesSent / count,
            bytesReceived: wire.bytesReceived / count, latency: LatencySummary(latencies))
    }

    private func runOffloaded(_ client: NBDClient) async throws {
        try await client.copyAndWrite(
            source: source, target: target, copySize: copySize, buffer: buffer, bufferOffset: bufferOffset, fua: fua)
    }

    /// What a host must do without the extension: the old chunk travels to the host and back.
    private func runHostSide(_ client: NBDClient) async throws {
        let old = try await client.read(offset: source, length: Int(copySize))
        try await client.write(offset: target, data: old, fua: fua)
        try await client.write(offset: target + UInt64(bufferOffset), data: buffer, fua: fua)
    }
}
