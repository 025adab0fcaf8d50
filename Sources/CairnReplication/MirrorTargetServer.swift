import Logging
import MirrorProtocol
import NIOCore
import NIOPosix
import NIOSSL

/// The replication listener of `cairn serve --replication-port`: any Cairn daemon can be a target.
/// A connection must prove the shared secret (challenge, hello) before any other frame is looked at.
public final class MirrorTargetServer: Sendable {
    let channel: any Channel
    public let port: Int

    private init(channel: any Channel, port: Int) {
        self.channel = channel
        self.port = port
    }

    /// Most primary connections at once: one per mirrored volume pair is the normal use; the bound keeps
    /// a misbehaving peer from exhausting descriptors.
    static let maximumConnections = 64

    /// Largest buffer one socket read fills: the default frame size (1 MiB) plus its header, so a data
    /// frame usually arrives in one read (measured: bench/mirror.py write-1m-qd8).
    static let receiveBufferMaximum = 1024 * 1024 + 64

    public static func start(
        host: String, port: Int, service: MirrorTargetService, secret: ReplicationSecret, group: any EventLoopGroup,
        logger: Logger, tls: ReplicationTLS? = nil
    ) async throws -> MirrorTargetServer {
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 16)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            // A 1 MiB write frame in a few reads rather than sixteen 64 KiB ones (NIO's default maximum).
            .childChannelOption(
                .recvAllocator,
                value: AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 64 * 1024, maximum: receiveBufferMaximum))
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tls { try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls.server)) }
                    try channel.pipeline.syncOperations.addHandlers([
                        MirrorFrameReader(), MirrorFrameWriter(),
                        MirrorTargetHandler(service: service, secret: secret, logger: logger),
                    ])
                }
            }
            .bind(host: host, port: port).get()
        return MirrorTargetServer(channel: channel, port: channel.localAddress?.port ?? port)
    }

    public func close() async {
        try? await channel.close()
    }
}

/// One primary's connection on the target. Loop-confined (`@unchecked Sendable`: touched only on the
/// channel's event loop). Replies are written as requests complete; they may leave in any order, and
/// the primary matches them by message id.
final class MirrorTargetHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = MirrorInbound
    typealias OutboundOut = MirrorFrame

    let service: MirrorTargetService
    let secret: ReplicationSecret
    let logger: Logger
    private var nonce: [UInt8] = []
    private var node: String?
    /// Requests being worked on for this connection.
    private var inFlight = 0
    /// Most requests of one connection worked on at once; past it the socket is not read until some
    /// finish (TCP then pushes back on the primary). Above the primary's own bound (host queue depth ×
    /// frames per write) so it only stops a misbehaving peer.
    static let maximumInFlight = 512

    init(service: MirrorTargetService, secret: ReplicationSecret, logger: Logger) {
        self.service = service
        self.secret = secret
        self.logger = logger
    }

    func channelActive(context: ChannelHandlerContext) {
        nonce = ReplicationSecret.nonce()
        context.writeAndFlush(
            wrapOutboundOut(MirrorFrame(command: .challenge, messageID: 0, payload: MirrorChallenge(nonce: nonce).payload)),
            promise: nil)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .corrupted(let command, _, let messageID):
            // The header is intact: ask for exactly this frame again.
            let reply = MirrorFrame(command: command, messageID: messageID).errorReply(
                MirrorRemoteError(.checksumMismatch, "the \(command) frame's payload failed its CRC-32C"))
            context.writeAndFlush(wrapOutboundOut(reply), promise: nil)
        case .frame(let frame):
            guard let node else { return authenticate(frame, context: context) }
            guard !frame.isReply else { return }
            let connection = ObjectIdentifier(self)
            let channel = context.channel
            inFlight += 1
            if inFlight == Self.maximumInFlight { channel.setOption(ChannelOptions.autoRead, value: false).whenComplete { _ in } }
            switch service.prepareData(frame, connection: connection) {
            case .refused(let reply):
                answered([reply], channel: channel)
            case .ready(let work) where work.fua || work.bytes > Self.batchedFrameBytes:
                // Alone: a FUA write may wait for a commit, a large one is worth a thread of its own.
                submit([work], channel: channel)
            case .ready(let work):
                batch.append(work)
                batchBytes += work.bytes
                if batch.count == Self.maximumBatch || batchBytes >= Self.maximumBatchBytes { submitBatch(channel) }
            case nil:
                // Data frames received before this one go to the I/O threads first, as they did unbatched.
                submitBatch(channel)
                let service = self.service
                let promise = context.eventLoop.makePromise(of: MirrorFrame.self)
                promise.completeWithTask { await service.handle(frame, connection: connection, node: node) }
                promise.futureResult.whenSuccess { [self] reply in answered([reply], channel: channel) }
            }
        }
    }

    /// Small data frames of one socket read, applied as one I/O-thread job when the read is done
    /// (`MirrorTargetService.applyData`).
    private var batch: [MirrorTargetService.DataWork] = []
    private var batchBytes = 0
    /// Frames up to this size are batched; larger ones (a 1 MiB frame) each get an I/O thread, so the
    /// page-cache copies of concurrent large writes still run in parallel.
    static let batchedFrameBytes = 64 << 10
    /// At most this many frames, or bytes, per batch: one job must not hold one I/O thread for long.
    static let maximumBatch = 64
    static let maximumBatchBytes = 512 << 10

    func channelReadComplete(context: ChannelHandlerContext) {
        submitBatch(context.channel)
        context.fireChannelReadComplete()
    }

    private func submitBatch(_ channel: any Channel) {
        guard !batch.isEmpty else { return }
        let work = batch
        batch = []
        batchBytes = 0
        submit(work, channel: channel)
    }

    private func submit(_ work: [MirrorTargetService.DataWork], channel: any Channel) {
        service.applyData(work, eventLoop: channel.eventLoop).whenSuccess { [self] replies in
            answered(replies, channel: channel)
        }
    }

    /// Writes replies (corked) and lets the socket be read again once below the in-flight bound.
    private func answered(_ replies: [MirrorFrame], channel: any Channel) {
        for reply in replies { channel.write(reply, promise: nil) }
        cork.flushSoon(channel)
        let wasAtBound = inFlight >= Self.maximumInFlight
        inFlight -= replies.count
        if wasAtBound && inFlight < Self.maximumInFlight {
            channel.setOption(ChannelOptions.autoRead, value: true).whenComplete { _ in }
            channel.read()
        }
    }

    /// Frames written in one event-loop turn leave in one gathering write.
    private let cork = CorkedFlush()

    private func authenticate(_ frame: MirrorFrame, context: ChannelHandlerContext) {
        let refusal: MirrorRemoteError
        if frame.command == .hello, let hello = try? MirrorHello.decode(payload: frame.payload) {
            if hello.version != MirrorLimits.protocolVersion {
                refusal = MirrorRemoteError(
                    .protocolViolation,
                    "this target speaks mirror protocol version \(MirrorLimits.protocolVersion), not \(hello.version)")
            } else if secret.verify(hello.proof, nonce: nonce) {
                node = hello.node
                logger.info("mirror primary connected", metadata: ["node": "\(hello.node)", "peer": "\(context.remoteAddress.map { "\($0)" } ?? "?")"])
                let proof = MirrorTargetProof(proof: secret.targetProof(primaryNonce: hello.nonce, targetNonce: nonce))
                context.writeAndFlush(wrapOutboundOut(frame.reply(proof.payload)), promise: nil)
                return
            } else {
                refusal = MirrorRemoteError(.authenticationFailed, "the primary does not hold this target's replication secret")
            }
        } else {
            refusal = MirrorRemoteError(.protocolViolation, "the first frame must be hello")
        }
        logger.warning(
            "mirror connection refused",
            metadata: ["peer": "\(context.remoteAddress.map { "\($0)" } ?? "?")", "reason": "\(refusal.message)"])
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(frame.errorReply(refusal))).whenComplete { _ in channel.close(promise: nil) }
    }

    func channelInactive(context: ChannelHandlerContext) {
        // Received data frames are applied as they would have been unbatched (their replies go nowhere).
        submitBatch(context.channel)
        service.connectionClosed(ObjectIdentifier(self))
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        logger.warning("mirror connection error", metadata: ["error": "\(error)"])
        context.close(promise: nil)
    }
}
