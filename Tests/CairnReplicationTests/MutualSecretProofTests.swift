import CairnEngine
import Foundation
import Logging
import MirrorProtocol
import NIOCore
import NIOPosix
import Testing

@testable import CairnReplication

/// A listener that speaks the mirror handshake like a target but answers the primary's hello with
/// `answer` (no proof, or a proof made with another secret): it does not know the primary's secret.
final class FakeTargetHandler: ChannelInboundHandler, Sendable {
    typealias InboundIn = MirrorInbound
    typealias OutboundOut = MirrorFrame

    enum Answer: Sendable { case noProof, proofWithOtherSecret }
    let answer: Answer

    init(answer: Answer) { self.answer = answer }

    static let challenge = [UInt8](repeating: 0x42, count: MirrorLimits.nonceLength)

    func channelActive(context: ChannelHandlerContext) {
        let frame = MirrorFrame(command: .challenge, messageID: 0, payload: MirrorChallenge(nonce: Self.challenge).payload)
        context.writeAndFlush(wrapOutboundOut(frame), promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case .frame(let frame) = unwrapInboundIn(data), frame.command == .hello,
            let hello = try? MirrorHello.decode(payload: frame.payload)
        else { return }
        switch answer {
        case .noProof:
            context.writeAndFlush(wrapOutboundOut(frame.reply()), promise: nil)
        case .proofWithOtherSecret:
            let other = try! ReplicationSecret(bytes: Array("not-the-primary-secret-0123".utf8))
            let proof = other.targetProof(primaryNonce: hello.nonce, targetNonce: Self.challenge)
            context.writeAndFlush(wrapOutboundOut(frame.reply(MirrorTargetProof(proof: proof).payload)), promise: nil)
        }
    }
}

@Suite("mutual proof of the replication secret")
struct MutualSecretProofTests {
    static let secret = try! ReplicationSecret(bytes: Array("in-process-secret-0123456789".utf8))

    @Test(arguments: [FakeTargetHandler.Answer.noProof, .proofWithOtherSecret])
    func fakeTargetIsRefused(answer: FakeTargetHandler.Answer) async throws {
        let group = MultiThreadedEventLoopGroup.singleton
        let server = try await ServerBootstrap(group: group)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandlers([
                        ByteToMessageHandler(MirrorFrameDecoder()), MirrorFrameWriter(), FakeTargetHandler(answer: answer),
                    ])
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        defer { server.close(promise: nil) }
        let port = try #require(server.localAddress?.port)
        let error = await #expect(throws: MirrorRemoteError.self) {
            _ = try await MirrorConnection.connect(
                host: "127.0.0.1", port: port, secret: Self.secret, node: "p", group: group, timeout: 5)
        }
        #expect(error?.code == .authenticationFailed)
    }

    @Test func proofsAreBoundToBothNoncesAndDirection() {
        let primaryNonce = ReplicationSecret.nonce()
        let targetNonce = ReplicationSecret.nonce()
        let proof = Self.secret.targetProof(primaryNonce: primaryNonce, targetNonce: targetNonce)
        #expect(Self.secret.verifyTarget(proof, primaryNonce: primaryNonce, targetNonce: targetNonce))
        #expect(!Self.secret.verifyTarget(proof, primaryNonce: targetNonce, targetNonce: primaryNonce))
        // The primary's answer to a challenge is never a valid target proof (no reflection).
        #expect(!Self.secret.verifyTarget(Self.secret.proof(for: primaryNonce), primaryNonce: primaryNonce, targetNonce: targetNonce))
    }
}
