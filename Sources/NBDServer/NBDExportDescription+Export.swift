import NBDProtocol

extension NBDExportDescription {
    /// Describes `export` for the handshake.
    ///
    /// `base:allocation` is offered exactly when the export has the `blockStatus` capability, and
    /// `x-cairn:copy-on-write` (last) exactly when it has `copyAndWrite`; other contexts come from
    /// `metaContexts`. The advertised maximum payload is capped at what the frame parser buffers
    /// (`maximumPayload`), and the minimum block size is at least 1.
    init(export: any NBDExport, maximumPayload: Int) {
        let capabilityContexts = [NBDMetaContext.baseAllocation, NBDMetaContext.cairnCopyOnWrite]
        var contexts = export.metaContexts.filter { !capabilityContexts.contains($0) }
        if export.capabilities.contains(.blockStatus) {
            contexts.insert(NBDMetaContext.baseAllocation, at: 0)
        }
        if export.capabilities.contains(.copyAndWrite) {
            contexts.append(NBDMetaContext.cairnCopyOnWrite)
        }
        let sizes = export.blockSizes
        self.init(
            name: export.name,
            description: export.exportDescription,
            size: export.size,
            flags: export.capabilities.transmissionFlags,
            blockSizes: NBDBlockSizeConstraints(
                minimum: max(sizes.minimum, 1),
                preferred: sizes.preferred,
                maximumPayload: min(sizes.maximumPayload, UInt32(clamping: maximumPayload))
            ),
            metaContexts: contexts,
            requiresTLS: export.requiresTLS
        )
    }
}

/// The export catalog seen through the handshake's read-only lens, for one session.
struct NBDCatalogDirectory: NBDExportDirectory {
    let catalog: any NBDExportCatalog
    let sessionReference: NBDSessionReference
    let maximumPayload: Int
    var session: NBDSessionInfo { sessionReference.info }

    func listExports() -> [NBDExportSummary] {
        catalog.listExports(session: session).map {
            NBDExportSummary(name: $0.name, description: $0.description, requiresTLS: $0.requiresTLS)
        }
    }

    func describeExport(named name: String) -> NBDExportDescription? {
        catalog.describe(name: name, session: session).map {
            NBDExportDescription(export: $0, maximumPayload: maximumPayload)
        }
    }
}
