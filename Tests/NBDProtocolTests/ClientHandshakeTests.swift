import NBDProtocol
import NIOCore
import Testing

/// `NBDClientHandshake` against the server's own `NBDHandshakeStateMachine`, through both sides'
/// encoders and parsers fed one byte at a time, plus the refusals a real server can answer with.
@Suite("client handshake")
struct ClientHandshakeTests {
    /// Plays the client machine against the server machine until the client finishes or fails.
    func negotiate(
        _ client: NBDClientHandshake,
        directory: FakeDirectory = FakeDirectory()
    ) throws -> Result<NBDClientSession, NBDNegotiationError> {
        var client = client
        var server = NBDHandshakeStateMachine(directory: directory)
        var serverParser = NBDFrameParser()
        var clientParser = NBDServerFrameParser()
        var toClient = ByteBuffer()
        var toServer = ByteBuffer()

        func perform(_ action: NBDHandshakeStateMachine.Action) {
            switch action {
            case .sendGreeting(let flags):
                toClient.writeNBDGreeting(flags: flags)
            case .reply(let option, let replies), .replyAndClose(let option, let replies):
                for reply in replies { toClient.writeNBDOptionReply(reply, option: option) }
            case .attach(let name, _):
                perform(server.attachSucceeded(directory.describeExport(named: name)!))
            case .enterTransmission(let entry):
                guard case .optionReplies(let option, let replies) = entry.reply else { return }
                for reply in replies { toClient.writeNBDOptionReply(reply, option: option) }
            case .startTLS, .close, .none:
                break
            }
        }

        perform(server.start())
        for _ in 0..<32 {
            for byte in toClient.readableBytesView {
                clientParser.append(ByteBuffer(bytes: [byte]))
                while let message = try clientParser.next() {
                    do {
                        switch try client.receive(message) {
                        case .send(let bytes): toServer.writeImmutableBuffer(bytes)
                        case .wait: break
                        case .finished(let session): return .success(session)
                        case .startTLS: return .failure(NBDNegotiationError("STARTTLS from a plaintext client"))
                        }
                    } catch {
                        return .failure(error)
                    }
                }
            }
            toClient.clear()
            for byte in toServer.readableBytesView {
                serverParser.append(ByteBuffer(bytes: [byte]))
                while let message = try serverParser.next() {
                    switch message {
                    case .clientFlags(let flags): perform(server.clientFlagsReceived(flags))
                    case .option(let option): perform(server.optionReceived(option))
                    case .request: Issue.record("request during the handshake")
                    }
                }
            }
            toServer.clear()
        }
        Issue.record("the handshake did not finish")
        return .failure(NBDNegotiationError("stuck"))
    }

    @Test("structured replies, the contexts the server has, GO with block sizes")
    func negotiates() throws {
        let client = NBDClientHandshake(
            exportName: "disk", metaContexts: ["base:allocation", NBDCopyOnWrite.contextName, "qemu:dirty-bitmap:b0"])
        let session = try negotiate(client).get()
        #expect(session.exportName == "disk" && session.size == 1 << 30)
        #expect(session.transmissionFlags.isSuperset(of: [.hasFlags, .sendFlush, .sendFUA, .sendTrim, .sendDF]))
        #expect(session.blockSizes == NBDBlockSizeConstraints(minimum: 512, preferred: 4096, maximumPayload: 1 << 25))
        #expect(session.metaContexts.map(\.name) == ["base:allocation", "qemu:dirty-bitmap:b0"])
        #expect(session.metaContextID(of: "qemu:dirty-bitmap:b0") == 2)
        #expect(session.metaContextID(of: NBDCopyOnWrite.contextName) == nil, "not offered, so not selected")
    }

    @Test("the copy-on-write context is selected where the export offers it")
    func selectsCopyOnWrite() throws {
        var directory = FakeDirectory()
        directory.exports[0].metaContexts.append(NBDCopyOnWrite.contextName)
        let session = try negotiate(
            NBDClientHandshake(exportName: "disk", metaContexts: [NBDCopyOnWrite.contextName]), directory: directory
        ).get()
        #expect(session.metaContexts == [NBDSelectedMetaContext(id: 3, name: NBDCopyOnWrite.contextName)])
    }

    @Test("no contexts wanted: straight to GO; an export without block sizes gets the protocol defaults")
    func plain() throws {
        let session = try negotiate(NBDClientHandshake(exportName: "plain")).get()
        #expect(session.metaContexts.isEmpty && session.size == 4096)
        #expect(session.transmissionFlags.contains(.readOnly))
        #expect(session.blockSizes == .protocolDefault)
    }

    @Test("an unknown export fails GO with ERR_UNKNOWN and the server's message")
    func unknownExport() throws {
        guard case .failure(let error) = try negotiate(NBDClientHandshake(exportName: "nope")) else {
            Issue.record("negotiated an unknown export")
            return
        }
        #expect(error.refusedOption == .go && error.reply == .errorUnknown && error.message.contains("nope"))
    }

    func fail(_ messages: [NBDServerMessage]) -> NBDNegotiationError? {
        var client = NBDClientHandshake(exportName: "disk", metaContexts: ["base:allocation"])
        do {
            for message in messages { _ = try client.receive(message) }
        } catch {
            return error
        }
        return nil
    }

    @Test("refusals and violations end the handshake")
    func refusals() {
        let greeting = NBDServerMessage.greeting([.fixedNewstyle])
        var export = ByteBuffer()
        export.writeNBDOptionReply(.ack, option: .go)
        #expect(fail([.greeting([])])?.message.contains("fixed newstyle") == true)
        let refused = fail([
            greeting, .optionReply(option: .structuredReply, type: .errorUnsupported, data: ByteBuffer()),
        ])
        #expect(refused?.refusedOption == .structuredReply && refused?.reply == .errorUnsupported)
        #expect(
            fail([greeting, .optionReply(option: .go, type: .ack, data: ByteBuffer())]) != nil,
            "reply to another option")
        let noExportInfo: [NBDServerMessage] = [
            greeting,
            .optionReply(option: .structuredReply, type: .ack, data: ByteBuffer()),
            .optionReply(option: .setMetaContext, type: .ack, data: ByteBuffer()),
            .optionReply(option: .go, type: .ack, data: ByteBuffer()),
        ]
        #expect(fail(noExportInfo)?.message.contains("NBD_INFO_EXPORT") == true)
        #expect(fail([greeting, .simpleReply(cookie: 1, error: nil)]) != nil)
    }

    @Test("client flags answer the server's: NO_ZEROES only when offered")
    func clientFlags() throws {
        for offered: NBDHandshakeFlags in [[.fixedNewstyle], [.fixedNewstyle, .noZeroes]] {
            var client = NBDClientHandshake(exportName: "disk")
            guard case .send(var bytes) = try client.receive(.greeting(offered)) else {
                Issue.record("nothing sent")
                return
            }
            let flags = NBDClientFlags(rawValue: bytes.readInteger(as: UInt32.self)!)
            #expect(flags == (offered.contains(.noZeroes) ? [.fixedNewstyle, .noZeroes] : [.fixedNewstyle]))
        }
    }
}
