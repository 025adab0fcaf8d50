import NBDProtocol
import NIOCore
import NIOPosix

/// A small async NBD client: fixed newstyle, structured replies, metadata contexts, NBD_OPT_GO with block
/// sizes, then pipelined requests. Calls may run concurrently; each awaits its own reply.
///
/// ```swift
/// let client = try await NBDClient.connect(to: NBDURI(parsing: "nbd://127.0.0.1:10809/disk0"),
///                                          metaContexts: [NBDMetaContext.baseAllocation])
/// try await client.write(offset: 0, data: ByteBuffer(repeating: 0xab, count: 4096))
/// let data = try await client.read(offset: 0, length: 4096)
/// await client.disconnect()
/// ```
///
/// Requests the server did not advertise are refused here, before anything is sent (proto.md: "The
/// client MUST NOT use a feature documented as 'exposed' by a flag unless that flag was set"), as are
/// ranges outside the export or off its minimum block size, which the client promised to honour by
/// asking for NBD_INFO_BLOCK_SIZE.
public final class NBDClient: Sendable {
    /// What the handshake agreed on.
    public let session: NBDClientSession
    let channel: any Channel
    let counters: NBDClientCounters

    init(session: NBDClientSession, channel: any Channel, counters: NBDClientCounters) {
        self.session = session
        self.channel = channel
        self.counters = counters
    }

    /// A client dropped without `disconnect()` still closes its socket (a hard disconnect).
    deinit {
        channel.close(promise: nil)
    }

    /// How long the server may take to finish the handshake; qemu-nbd's `--handshake-limit` default.
    public static let defaultHandshakeTimeout = TimeAmount.seconds(10)

    /// Connects and negotiates.
    ///
    /// - Parameter metaContexts: contexts to select (e.g. `base:allocation`, `x-cairn:copy-on-write`);
    ///   those the server does not offer are simply absent from `session.metaContexts`.
    public static func connect(
        to uri: NBDURI,
        metaContexts: [String] = [],
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        handshakeTimeout: TimeAmount = NBDClient.defaultHandshakeTimeout
    ) async throws -> NBDClient {
        let eventLoop = group.next()
        let negotiated = eventLoop.makePromise(of: NBDClientSession.self)
        let counters = NBDClientCounters()
        let tls = try uri.tlsCredentials()
        let handshake = NBDClientHandshake(exportName: uri.exportName, metaContexts: metaContexts, tls: tls != nil)
        let channel: any Channel
        do {
            channel = try await ClientBootstrap(group: eventLoop)
                // proto.md: both sides "SHOULD disable Nagle's algorithm".
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                .connectTimeout(handshakeTimeout)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        let handler = NBDClientHandler(
                            handshake: handshake, negotiated: negotiated, handshakeTimeout: handshakeTimeout,
                            counters: counters, tls: tls)
                        try channel.pipeline.syncOperations.addHandler(handler)
                    }
                }
                .connect(host: uri.host, port: uri.port)
                .get()
        } catch {
            negotiated.fail(error)
            throw error
        }
        let session = try await negotiated.futureResult.get()
        return NBDClient(session: session, channel: channel, counters: counters)
    }

    /// Export size in bytes.
    public var size: UInt64 { session.size }
    /// Transmission flags as the server sent them.
    public var flags: NBDTransmissionFlags { session.transmissionFlags }
    /// Bytes and round trips so far on this connection (handshake included).
    public var statistics: NBDClientStatistics { counters.snapshot }

    /// NBD_CMD_READ: `length` bytes at `offset`, holes as zeroes.
    public func read(offset: UInt64, length: Int) async throws -> ByteBuffer {
        try checkRange(offset, UInt64(length), payload: true)
        let reply = try await send(NBDClientCommand(type: .read, offset: offset, length: UInt64(length)))
        guard case .data(let data) = reply else { throw NBDClientError.protocolViolation("READ answered without data") }
        return data
    }

    /// NBD_CMD_WRITE of `data` at `offset`; with `fua`, durable when this returns.
    public func write(offset: UInt64, data: ByteBuffer, fua: Bool = false) async throws {
        try checkWritable()
        try checkRange(offset, UInt64(data.readableBytes), payload: true)
        let command = NBDClientCommand(
            type: .write, flags: try fuaFlag(fua), offset: offset, length: UInt64(data.readableBytes), payload: [data])
        _ = try await send(command)
    }

    /// NBD_CMD_FLUSH: every write already answered is durable when this returns.
    public func flush() async throws {
        try require(.sendFlush, "FLUSH")
        _ = try await send(NBDClientCommand(type: .flush))
    }

    /// NBD_CMD_TRIM: the range is no longer needed (its contents become unspecified).
    public func trim(offset: UInt64, length: UInt64, fua: Bool = false) async throws {
        try checkWritable()
        try require(.sendTrim, "TRIM")
        try checkRange(offset, length, payload: false)
        _ = try await send(NBDClientCommand(type: .trim, flags: try fuaFlag(fua), offset: offset, length: length))
    }

    /// NBD_CMD_WRITE_ZEROES; `noHole` keeps the range allocated.
    public func writeZeroes(offset: UInt64, length: UInt64, noHole: Bool = false, fua: Bool = false) async throws {
        try checkWritable()
        try require(.sendWriteZeroes, "WRITE_ZEROES")
        try checkRange(offset, length, payload: false)
        var flags = try fuaFlag(fua)
        if noHole { flags.insert(.noHole) }
        _ = try await send(NBDClientCommand(type: .writeZeroes, flags: flags, offset: offset, length: length))
    }

    /// NBD_CMD_BLOCK_STATUS for one selected context: descriptors from `offset`, covering at least one
    /// byte and possibly less (or, for the last one, more) than `length`.
    public func blockStatus(
        context: String = NBDMetaContext.baseAllocation,
        offset: UInt64,
        length: UInt64
    ) async throws -> [NBDBlockDescriptor] {
        guard let id = session.metaContextID(of: context) else {
            throw NBDClientError.notNegotiated("meta context \(context)")
        }
        // A compact header's length is 32 bits; ask for the largest aligned length that fits, and no more
        // than the export has (the server may answer less anyway).
        let minimum = UInt64(max(session.blockSizes.minimum, 1))
        let asked = min(length, UInt64(UInt32.max) / minimum * minimum, size - min(offset, size))
        try checkRange(offset, asked, payload: false)
        let command = NBDClientCommand(type: .blockStatus, offset: offset, length: asked)
        guard case .extents(let byContext) = try await send(command), let descriptors = byContext[id] else {
            throw NBDClientError.protocolViolation("BLOCK_STATUS reply without a chunk for \(context)")
        }
        return descriptors
    }

    /// Soft disconnect (NBD_CMD_DISC), then close. Call it once no request is in flight: any still
    /// waiting fail with `connectionClosed`.
    public func disconnect() async {
        try? await channel.writeAndFlush(NBDClientCommand(type: .disconnect))
        try? await channel.close()
    }

    // MARK: helpers

    func send(_ command: NBDClientCommand) async throws -> NBDClientReply {
        var command = command
        let reply = channel.eventLoop.makePromise(of: NBDClientReply.self)
        command.reply = reply
        // On a closed channel the write never reaches the handler, which would otherwise answer: fail
        // the reply here too (a second completion of a promise is a no-op).
        let written = channel.eventLoop.makePromise(of: Void.self)
        written.futureResult.whenFailure { _ in reply.fail(NBDClientError.connectionClosed) }
        channel.writeAndFlush(command, promise: written)
        return try await reply.futureResult.get()
    }

    func require(_ flag: NBDTransmissionFlags, _ what: String) throws(NBDClientError) {
        guard flags.contains(flag) else { throw .notNegotiated("\(what) was not advertised") }
    }

    func checkWritable() throws(NBDClientError) {
        // The server "MUST error subsequent write operations"; no point sending them.
        guard !flags.contains(.readOnly) else { throw .notNegotiated("writes: the export is read-only") }
    }

    func fuaFlag(_ fua: Bool) throws(NBDClientError) -> NBDCommandFlags {
        guard fua else { return [] }
        try require(.sendFUA, "FUA")
        return .fua
    }

    /// Inside the export, aligned to the minimum block size, nonempty, and for READ/WRITE within the
    /// maximum payload (proto.md "Block size constraints").
    func checkRange(_ offset: UInt64, _ length: UInt64, payload: Bool) throws(NBDClientError) {
        let sizes = session.blockSizes
        let minimum = UInt64(max(sizes.minimum, 1))
        guard length > 0 else { throw .invalidArgument("zero length") }
        let (end, overflow) = offset.addingReportingOverflow(length)
        guard !overflow, end <= size else {
            throw .invalidArgument("[\(offset), +\(length)) is beyond the export's \(size) bytes")
        }
        guard offset % minimum == 0, length % minimum == 0 else {
            throw .invalidArgument("[\(offset), +\(length)) is not aligned to \(minimum) bytes")
        }
        if payload, length > UInt64(maximumPayload) {
            throw .invalidArgument("\(length) bytes exceed the maximum payload of \(maximumPayload)")
        }
    }

    /// The server's maximum payload, capped at the 32 MiB the frame parser buffers.
    var maximumPayload: Int { Int(min(session.blockSizes.maximumPayload, UInt32(NBDLimits.maximumPayload))) }
}
