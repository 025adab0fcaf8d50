import MirrorProtocol
import NIOCore
import NIOPosix
import Synchronization

/// A TCP relay between a primary and its target, in process, that a test can break: close every
/// connection, refuse new ones, lose write frames, delay traffic, and point at a restarted target on a
/// new port (the primary's record names the relay, so it never learns the target moved).
///
/// The primary → target stream is cut into whole frames (`MirrorFrame`'s 24-byte header with the
/// payload length at bytes 16..<20, then the payload and a 4-byte CRC), so a lost frame is lost whole and
/// the stream stays in step, as with `scripts/mirror_fault_proxy.py` in the two-daemon tests.
final class FaultyLink: Sendable {
    struct Faults {
        var upstreamPort: Int
        /// New connections are accepted and closed at once (a target that is down, a broken route).
        var refusing = false
        /// The target is restarting: connections are refused whatever `refusing` says.
        var targetDown = false
        /// Write frames (primary → target) still to lose.
        var writeFramesToLose = 0
        var framesLost = 0
        /// Added to every delivery, both ways (order kept).
        var delay: TimeAmount = .zero
        var open: [ObjectIdentifier: any Channel] = [:]
        /// Run instead of delivering the next flush frame (primary → target), once.
        var flushInterception: (@Sendable () -> Void)?
    }

    let faults: Mutex<Faults>
    let listener = Mutex<(any Channel)?>(nil)

    private init(upstreamPort: Int) { faults = Mutex(Faults(upstreamPort: upstreamPort)) }

    /// Starts a relay on a loopback port of its own, forwarding to `upstreamPort`.
    static func start(upstreamPort: Int) async throws -> FaultyLink {
        let link = FaultyLink(upstreamPort: upstreamPort)
        let channel = try await ServerBootstrap(group: SimulatedMirrorNode.eventLoops)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { client in link.accept(client) }
            .bind(host: "127.0.0.1", port: 0).get()
        link.listener.withLock { $0 = channel }
        return link
    }

    var port: Int { listener.withLock { $0?.localAddress?.port ?? 0 } }

    struct Refused: Error {}

    /// Connects the new client to the target; the target's bytes are read only once the client is active.
    private func accept(_ client: any Channel) -> EventLoopFuture<Void> {
        let (port, refused) = faults.withLock { ($0.upstreamPort, $0.refusing || $0.targetDown) }
        guard !refused else { return client.eventLoop.makeFailedFuture(Refused()) }
        return ClientBootstrap(group: client.eventLoop)
            .channelOption(.autoRead, value: false)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { upstream in
                upstream.eventLoop.makeCompletedFuture {
                    try upstream.pipeline.syncOperations.addHandler(Relay(link: self, peer: client, framed: false))
                }
            }
            .connect(host: "127.0.0.1", port: port)
            .flatMapThrowing { upstream in
                self.faults.withLock { f in
                    f.open[ObjectIdentifier(client)] = client
                    f.open[ObjectIdentifier(upstream)] = upstream
                }
                try client.pipeline.syncOperations.addHandler(Relay(link: self, peer: upstream, framed: true))
            }
    }

    /// Closes every connection now (both ends see it lost).
    func cutAll() {
        for channel in faults.withLock({ Array($0.open.values) }) { channel.close(promise: nil) }
    }

    func setRefusing(_ refusing: Bool) { faults.withLock { $0.refusing = refusing } }

    /// The target is going down (every connection closed, new ones refused) or is up again at `port`.
    func setTarget(down: Bool, port: Int? = nil) {
        faults.withLock { f in
            f.targetDown = down
            if let port { f.upstreamPort = port }
        }
        if down { cutAll() }
    }

    func loseWriteFrames(_ count: Int) { faults.withLock { $0.writeFramesToLose += count } }

    /// The next flush frame is not delivered: `action` runs instead (on an event loop), to break something
    /// at the moment the primary asks for durability.
    func interceptNextFlush(_ action: @escaping @Sendable () -> Void) { faults.withLock { $0.flushInterception = action } }

    func setDelay(_ delay: TimeAmount) { faults.withLock { $0.delay = delay } }

    /// Back to a healthy link (the target's own state is left as it is).
    func heal() {
        faults.withLock { f in
            f.refusing = false
            f.writeFramesToLose = 0
            f.delay = .zero
        }
    }

    var framesLost: Int { faults.withLock { $0.framesLost } }

    func close() async {
        cutAll()
        try? await listener.withLock { $0 }?.close()
    }

    fileprivate func takeLoss() -> Bool {
        faults.withLock { f in
            guard f.writeFramesToLose > 0 else { return false }
            f.writeFramesToLose -= 1
            f.framesLost += 1
            return true
        }
    }

    fileprivate func takeFlushInterception() -> (@Sendable () -> Void)? {
        faults.withLock { f in
            defer { f.flushInterception = nil }
            return f.flushInterception
        }
    }

    fileprivate var delay: TimeAmount { faults.withLock { $0.delay } }

    fileprivate func forget(_ channel: any Channel) { faults.withLock { _ = $0.open.removeValue(forKey: ObjectIdentifier(channel)) } }
}

/// One direction of a relayed connection. Loop-confined (both channels of a pair share one event loop).
private final class Relay: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer

    let link: FaultyLink
    let peer: any Channel
    /// Primary → target: cut into frames, so that whole write frames can be lost.
    let framed: Bool
    private var pending = ByteBuffer()
    /// When the last delayed delivery is due: later ones never overtake it.
    private var lastDelivery = NIODeadline.uptimeNanoseconds(0)

    init(link: FaultyLink, peer: any Channel, framed: Bool) {
        self.link = link
        self.peer = peer
        self.framed = framed
    }

    func channelActive(context: ChannelHandlerContext) {
        // The client is connected end to end: the target's challenge may flow now.
        if framed { peer.setOption(ChannelOptions.autoRead, value: true).whenComplete { _ in } }
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        guard framed else { return deliver(bytes, on: context.eventLoop) }
        pending.writeBuffer(&bytes)
        while pending.readableBytes >= MirrorFrame.headerLength,
            let length = pending.getInteger(at: pending.readerIndex + 16, as: UInt32.self)
        {
            let total = MirrorFrame.headerLength + Int(length) + MirrorFrame.trailerLength
            guard pending.readableBytes >= total, let frame = pending.readSlice(length: total) else { break }
            let command = frame.getInteger(at: frame.readerIndex + 4, as: UInt16.self)
            if command == MirrorCommand.write.rawValue && link.takeLoss() { continue }
            if command == MirrorCommand.flush.rawValue, let action = link.takeFlushInterception() {
                action()
                continue
            }
            deliver(frame, on: context.eventLoop)
        }
        pending.discardReadBytes()
    }

    private func deliver(_ bytes: ByteBuffer, on eventLoop: any EventLoop) {
        let delay = link.delay
        let now = NIODeadline.now()
        let peer = self.peer
        guard delay != .zero || lastDelivery > now else { return peer.writeAndFlush(bytes, promise: nil) }
        let due = max(now + delay, lastDelivery + .nanoseconds(1))
        lastDelivery = due
        eventLoop.scheduleTask(deadline: due) { peer.writeAndFlush(bytes, promise: nil) }
    }

    func channelInactive(context: ChannelHandlerContext) {
        link.forget(context.channel)
        peer.close(promise: nil)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) { context.close(promise: nil) }
}
