extension NBDHandshakeStateMachine {
    /// NBD_OPT_LIST_META_CONTEXT. No query lists every context of the export; a query `namespace:` with an
    /// empty leaf lists the namespace (proto.md: `base:` "MUST [be supported] as a wildcard"); other
    /// queries match a context by name; queries matching nothing are ignored.
    mutating func listMetaContext(_ request: NBDMetaContextRequest) -> Action {
        // One lookup per option: the export may be deleted between two (the catalog is live).
        let export: NBDExportDescription
        switch exportForMetaContext(request, option: .listMetaContext) {
        case .success(let found): export = found
        case .failure(let refusal): return refusal.action
        }
        let names: [String]
        if request.queries.isEmpty {
            names = export.metaContexts
        } else {
            names = export.metaContexts.filter { name in
                request.queries.contains { query in query == name || Self.isNamespaceWildcard(query, of: name) }
            }
        }
        // "The metadata context ID in these replies is reserved and SHOULD be set to zero".
        let replies = names.map { NBDOptionReply.metaContext(id: 0, name: $0) }
        return .reply(.listMetaContext, replies + [.ack])
    }

    /// NBD_OPT_SET_META_CONTEXT. Replaces the selection, even when it fails. Only exact names select a
    /// context: `base:` "MUST [be ignored] during NBD_OPT_SET_META_CONTEXT", and unknown contexts are
    /// silently left out.
    mutating func setMetaContext(_ request: NBDMetaContextRequest) -> Action {
        resetMetaContexts()
        let export: NBDExportDescription
        switch exportForMetaContext(request, option: .setMetaContext) {
        case .success(let found): export = found
        case .failure(let refusal): return refusal.action
        }
        var selected: [NBDSelectedMetaContext] = []
        for query in request.queries {
            guard let id = export.metaContextID(of: query), !selected.contains(where: { $0.id == id }) else {
                continue
            }
            selected.append(NBDSelectedMetaContext(id: id, name: query))
        }
        negotiated.metaContextExport = request.exportName
        negotiated.metaContexts = selected
        let replies = selected.map { NBDOptionReply.metaContext(id: $0.id, name: $0.name) }
        return .reply(.setMetaContext, replies + [.ack])
    }

    mutating func resetMetaContexts() {
        negotiated.metaContextExport = nil
        negotiated.metaContexts = []
    }

    /// Contexts for the export being entered. proto.md: BLOCK_STATUS needs SET_META_CONTEXT to have named
    /// "the same export name used to enter transmission phase", so another name clears the selection.
    /// Ids are re-resolved against the attached export in case its context list changed meanwhile.
    func metaContextsForTransmission(exportName: String, export: NBDExportDescription) -> [NBDSelectedMetaContext] {
        guard negotiated.metaContextExport == exportName else { return [] }
        return negotiated.metaContexts.compactMap { context in
            export.metaContextID(of: context.name).map { NBDSelectedMetaContext(id: $0, name: context.name) }
        }
    }

    /// A refusal of a meta context option, as an error so `Result` can carry it.
    struct MetaContextRefusal: Error {
        var action: Action
    }

    /// The export a meta context option names, looked up once, or the refusal to send.
    private func exportForMetaContext(_ request: NBDMetaContextRequest, option: NBDOptionCode)
        -> Result<NBDExportDescription, MetaContextRefusal>
    {
        // proto.md: SET "MUST NOT be requested unless structured replies or extended headers have been
        // negotiated first ... a server SHOULD send NBD_REP_ERR_INVALID"; LIST "MAY" get the same answer.
        guard negotiated.replyStyle != .simple else {
            return .failure(
                MetaContextRefusal(action: .reply(option, [.error(.errorInvalid, message: "negotiate structured replies first")])))
        }
        guard let export = directory.describeExport(named: request.exportName) else {
            return .failure(
                MetaContextRefusal(
                    action: .reply(option, [.error(.errorUnknown, message: "no export named \"\(request.exportName)\"")])))
        }
        // Selective TLS may only use ERR_TLS_REQD for INFO, GO and EXPORT_NAME: refuse by policy here.
        if export.requiresTLS, !tlsActive {
            return .failure(MetaContextRefusal(action: .reply(option, [.error(.errorPolicy, message: "export requires TLS")])))
        }
        return .success(export)
    }

    /// `ns:` (empty leaf) matches every context in namespace `ns`.
    static func isNamespaceWildcard(_ query: String, of name: String) -> Bool {
        query.hasSuffix(":") && query.utf8.count > 1 && name.hasPrefix(query)
    }
}
