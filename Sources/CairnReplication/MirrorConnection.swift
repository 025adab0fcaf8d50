import Logging
import MirrorProtocol
import NIOCore
import NIOPosix
import NIOSSL

/// Why a frame got no valid answer. All of these are transport failures: the frame may be sent again
/// (on a new connection), unlike a `MirrorRemoteError`, which is the target's considered answer.
enum MirrorLinkError: Error, Sendable, CustomStringConvertible {
    case timeout(MirrorCommand, seconds: Double)
    case connectionLost
    case corruptedReply(MirrorCommand)
    case connectFailed(String)

    var description: String {
        switch self {
        case .timeout(let command, let seconds): "no answer to a \(command) frame within \(seconds) s"
        case .connectionLost: "the connection to the target was lost"
        case .corruptedReply(let command): "the answer to a \(command) frame failed its checksum"
        case .connectFailed(let reason): "cannot connect: \(reason)"
        }
    }
}

/// The primary's end of one authenticated TCP connection to a target: sends request frames with fresh
/// message ids and matches replies by id (the originating node correlates message ids to tell
/// which frames were received and processed). Pipelined: any number of frames in flight.
final class MirrorConnection: Sendable {
    let channel: any Channel
    let handler: MirrorClientHandler

    private init(channel: any Channel, handler: MirrorClientHandler) {
        self.channel = channel
        self.handler = handler
    }

    /// Connects, waits for the target's challenge and proves the secret.
    static func connect(
        host: String, port: Int, secret: ReplicationSecret, node: String, group: any EventLoopGroup, timeout: Double,
        tls: ReplicationTLS? = nil
    ) async throws -> MirrorConnection {
        let channel: any Channel
        do {
            channel = try await ClientBootstrap(group: group)
                .connectTimeout(.milliseconds(Int64(timeout * 1000)))
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        if let tls { try channel.pipeline.syncOperations.addHandler(tls.clientHandler(host: host)) }
                        try channel.pipeline.syncOperations.addHandlers([
                            MirrorFrameReader(), MirrorFrameWriter(),
                            MirrorClientHandler(),
                        ])
                    }
                }
                .connect(host: host, port: port).get()
        } catch {
            throw MirrorLinkError.connectFailed("\(host):\(port): \(error)")
        }
        let handler = try await channel.pipeline.handler(type: MirrorClientHandler.self).get()
        let connection = MirrorConnection(channel: channel, handler: handler)
        do {
            let challengeFrame = try await handler.challenge(on: channel.eventLoop, timeout: timeout)
            let challenge = try MirrorChallenge.decode(payload: challengeFrame.payload)
            guard challenge.version == MirrorLimits.protocolVersion else {
                throw MirrorRemoteError(
                    .protocolViolation,
                    "the target speaks mirror protocol version \(challenge.version), this node \(MirrorLimits.protocolVersion)")
            }
            let ownNonce = ReplicationSecret.nonce()
            let hello = MirrorHello(proof: secret.proof(for: challenge.nonce), node: node, nonce: ownNonce)
            let reply = try await connection.request(.hello, payload: hello.payload, timeout: timeout)
            if let error = reply.remoteError() { throw error }
            // The target proves the secret back before anything is sent to it.
            let proof = try? MirrorTargetProof.decode(payload: reply.payload)
            guard let proof, secret.verifyTarget(proof.proof, primaryNonce: ownNonce, targetNonce: challenge.nonce) else {
                throw MirrorRemoteError(
                    .authenticationFailed, "the target at \(host):\(port) does not hold this primary's replication secret")
            }
            return connection
        } catch {
            connection.close()
            throw error
        }
    }

    /// Sends one frame and waits for its reply (success or typed error) or a transport failure.
    func request(
        _ command: MirrorCommand, flags: MirrorFrameFlags = [], payload: ByteBuffer, timeout: Double
    ) async throws -> MirrorFrame {
        try await requestFuture(command, flags: flags, payload: payload, timeout: timeout).get()
    }

    /// Sends one frame; the future (on the connection's event loop) holds its reply or a transport failure.
    /// Called on the loop, the frame is queued at once; otherwise one task hops to the loop.
    /// `data` follows `payload` on the wire without being copied into it (`MirrorFrame.data`).
    func requestFuture(
        _ command: MirrorCommand, flags: MirrorFrameFlags = [], payload: ByteBuffer, data: ByteBuffer? = nil,
        timeout: Double
    ) -> EventLoopFuture<MirrorFrame> {
        let handler = self.handler
        let channel = self.channel
        let promise = channel.eventLoop.makePromise(of: MirrorFrame.self)
        if channel.eventLoop.inEventLoop {
            handler.send(
                command: command, flags: flags, payload: payload, data: data, promise: promise, timeout: timeout,
                channel: channel)
        } else {
            channel.eventLoop.execute {
                handler.send(
                command: command, flags: flags, payload: payload, data: data, promise: promise, timeout: timeout,
                channel: channel)
            }
        }
        return promise.futureResult
    }

    var isActive: Bool { channel.isActive }

    func close() {
        channel.close(promise: nil)
    }
}

/// Loop-confined state of a primary's connection: replies awaited by message id, each with a timer.
/// `@unchecked Sendable`: every member is touched only on the channel's event loop.
final class MirrorClientHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = MirrorInbound
    typealias OutboundOut = MirrorFrame

    private struct Pending {
        var promise: EventLoopPromise<MirrorFrame>
        var timer: Scheduled<Void>
        var command: MirrorCommand
    }

    private var pending: [UInt64: Pending] = [:]
    private var nextMessageID: UInt64 = 1
    private var challengePromise: EventLoopPromise<MirrorFrame>?
    private var receivedChallenge: MirrorFrame?
    private var closed = false

    /// The target's first frame.
    func challenge(on eventLoop: any EventLoop, timeout: Double) async throws -> MirrorFrame {
        let promise = eventLoop.makePromise(of: MirrorFrame.self)
        eventLoop.execute {
            if let frame = self.receivedChallenge {
                promise.succeed(frame)
            } else if self.closed {
                promise.fail(MirrorLinkError.connectionLost)
            } else {
                self.challengePromise = promise
                eventLoop.scheduleTask(in: .milliseconds(Int64(timeout * 1000))) {
                    promise.fail(MirrorLinkError.timeout(.challenge, seconds: timeout))
                }
            }
        }
        return try await promise.futureResult.get()
    }

    func send(
        command: MirrorCommand, flags: MirrorFrameFlags, payload: ByteBuffer, data: ByteBuffer? = nil,
        promise: EventLoopPromise<MirrorFrame>, timeout: Double, channel: any Channel
    ) {
        guard !closed else { return promise.fail(MirrorLinkError.connectionLost) }
        let id = nextMessageID
        nextMessageID += 1
        let timer = channel.eventLoop.scheduleTask(in: .milliseconds(Int64(timeout * 1000))) { [self] in
            guard let entry = pending.removeValue(forKey: id) else { return }
            entry.promise.fail(MirrorLinkError.timeout(command, seconds: timeout))
        }
        pending[id] = Pending(promise: promise, timer: timer, command: command)
        channel.write(MirrorFrame(command: command, flags: flags, messageID: id, payload: payload, data: data), promise: nil)
        cork.flushSoon(channel)
    }

    /// Frames written in one event-loop turn leave in one gathering write.
    private let cork = CorkedFlush()

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .frame(let frame) where frame.command == .challenge && !frame.isReply:
            receivedChallenge = frame
            challengePromise?.succeed(frame)
            challengePromise = nil
        case .frame(let frame):
            guard let entry = pending.removeValue(forKey: frame.messageID) else { return }  // late: timed out
            entry.timer.cancel()
            entry.promise.succeed(frame)
        case .corrupted(_, _, let messageID):
            guard let entry = pending.removeValue(forKey: messageID) else { return }
            entry.timer.cancel()
            entry.promise.fail(MirrorLinkError.corruptedReply(entry.command))
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        failAll()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        failAll()
        context.close(promise: nil)
    }

    private func failAll() {
        closed = true
        challengePromise?.fail(MirrorLinkError.connectionLost)
        challengePromise = nil
        let entries = pending
        pending = [:]
        for entry in entries.values {
            entry.timer.cancel()
            entry.promise.fail(MirrorLinkError.connectionLost)
        }
    }
}
