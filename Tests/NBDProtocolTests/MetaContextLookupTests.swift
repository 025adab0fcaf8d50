import NBDProtocol
import Synchronization
import Testing

/// A directory whose export vanishes after a number of lookups: a volume deleted while a client
/// negotiates (the catalog is live).
final class VanishingDirectory: NBDExportDirectory {
    let lookupsLeft: Mutex<Int>
    let lookups = Mutex(0)
    let export = FakeDirectory().exports[0]

    init(lookups: Int) { lookupsLeft = Mutex(lookups) }

    func listExports() -> [NBDExportSummary] { [] }

    func describeExport(named name: String) -> NBDExportDescription? {
        lookups.withLock { $0 += 1 }
        return lookupsLeft.withLock { left in
            guard left > 0, name == export.name else { return nil }
            left -= 1
            return export
        }
    }
}

@Suite struct MetaContextLookupTests {
    private func negotiating(_ directory: VanishingDirectory) -> NBDHandshakeStateMachine {
        var machine = NBDHandshakeStateMachine(configuration: .init(), directory: directory)
        _ = machine.start()
        _ = machine.clientFlagsReceived([.fixedNewstyle, .noZeroes])
        _ = machine.optionReceived(.structuredReply)
        return machine
    }

    /// Found on the first lookup, gone on a second: each option looks it up once, so the answer is
    /// consistent (the contexts of the export as it was) and nothing crashes.
    @Test(arguments: [NBDOptionCode.setMetaContext, .listMetaContext]) func exportDeletedBetweenLookups(
        option: NBDOptionCode
    ) {
        let directory = VanishingDirectory(lookups: 1)
        var machine = negotiating(directory)
        let request = NBDMetaContextRequest(exportName: "disk", queries: ["base:allocation"])
        let action = machine.optionReceived(option == .setMetaContext ? .setMetaContext(request) : .listMetaContext(request))
        let id: UInt32 = option == .setMetaContext ? 1 : 0
        #expect(action == .reply(option, [.metaContext(id: id, name: "base:allocation"), .ack]))
        #expect(directory.lookups.withLock { $0 } == 1)
        // Deleted now: the next option says so.
        let again = machine.optionReceived(option == .setMetaContext ? .setMetaContext(request) : .listMetaContext(request))
        guard case .reply(_, let replies) = again else {
            Issue.record("expected a reply, got \(again)")
            return
        }
        #expect(replies.last?.type == .errorUnknown)
    }
}
