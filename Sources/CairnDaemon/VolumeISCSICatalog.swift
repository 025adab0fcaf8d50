import CairnEngine
import ISCSIServer
import NBDServer

/// The iSCSI targets over the pool: one target per volume, `iqn.2026-12.dev.cairn:<volume>`, and one
/// read-only target per snapshot, `iqn.2026-12.dev.cairn:<volume>:<snapshot>` (':' cannot appear in a
/// volume or snapshot name, so the split is unambiguous). Each target has one logical unit, LUN 0.
///
/// Everything goes through the NBD export catalog: the same access rules (by source address), the same
/// attach and detach (backup session routing, snapshot pinning), and the same `VolumeExport` whose
/// write, flush, trim and zeroing paths feed mirrors, clone groups, backups and metrics.
final class VolumeISCSICatalog: ISCSITargetCatalog {
    /// The naming authority: a domain ("cairn.dev", reversed) and a month it was owned (RFC 3720 §3.2.6.3.1).
    static let prefix = "iqn.2026-12.dev.cairn:"
    /// iSCSI sessions are numbered apart from NBD connections for backup routing and logs.
    static let sessionIDBase: UInt64 = 1 << 48

    let volumes: VolumeCatalog
    /// False under NBD's `tls: required`: iSCSI has no TLS here, so it serves nothing rather than serve
    /// in the clear what NBD guards.
    let servesPlaintext: Bool
    let compareAndWriteLocks = CompareAndWriteLocks()
    let counters: ISCSIMetrics

    init(volumes: VolumeCatalog, servesPlaintext: Bool) {
        self.volumes = volumes
        self.servesPlaintext = servesPlaintext
        self.counters = ISCSIMetrics(registry: volumes.metrics.registry)
    }

    /// `vol` → `iqn…:vol`; `vol@snap` → `iqn…:vol:snap`.
    static func targetName(export: String) -> String {
        prefix + String(export.map { $0 == "@" ? ":" : $0 })
    }

    /// The export name of a target, nil when the name is not one of ours.
    static func exportName(target: String) -> String? {
        guard target.hasPrefix(prefix) else { return nil }
        let rest = target.dropFirst(prefix.count)
        let parts = rest.split(separator: ":", omittingEmptySubsequences: false)
        guard (1...2).contains(parts.count), parts.allSatisfy({ !$0.isEmpty }) else { return nil }
        return parts.joined(separator: "@")
    }

    func session(_ initiator: ISCSIInitiatorInfo) -> NBDSessionInfo {
        // The CHAP name is the session's identity for access rules' `clients`, as a certificate subject
        // is for NBD over TLS.
        NBDSessionInfo(
            id: Self.sessionIDBase + initiator.id, remoteAddress: initiator.remoteAddress, remoteIP: initiator.remoteIP,
            clientIdentity: initiator.chapName)
    }

    /// An export this initiator may reach over iSCSI: known, granted, and not one that needs TLS.
    func reachable(_ export: String, _ session: NBDSessionInfo) -> Bool {
        servesPlaintext && !volumes.requiresTLS(export) && volumes.grant(export, session) != nil
    }

    func targetNames(initiator: ISCSIInitiatorInfo) -> [String] {
        let session = session(initiator)
        return volumes.listExports(session: session).map(\.name).filter { reachable($0, session) }
            .map(Self.targetName(export:))
    }

    func targetExists(_ target: String, initiator: ISCSIInitiatorInfo) -> Bool {
        let session = session(initiator)
        guard let export = Self.exportName(target: target), reachable(export, session) else { return false }
        return volumes.describe(name: export, session: session) != nil
    }

    func attach(target: String, initiator: ISCSIInitiatorInfo) throws -> any ISCSILogicalUnit {
        let session = session(initiator)
        guard let name = Self.exportName(target: target), reachable(name, session) else {
            throw ISCSILogicalUnitError(.invalid, "no target named '\(target)'")
        }
        let export = try volumes.attach(name: name, session: session)
        guard let volume = export as? VolumeExport else {
            volumes.detach(export, session: session)
            throw ISCSILogicalUnitError(.invalid, "'\(target)' is not a volume")
        }
        return VolumeLogicalUnit(export: volume, locks: compareAndWriteLocks)
    }

    func detach(_ unit: any ISCSILogicalUnit, initiator: ISCSIInitiatorInfo) {
        guard let unit = unit as? VolumeLogicalUnit else { return }
        volumes.detach(unit.export, session: session(initiator))
    }

    /// EXTENDED COPY's other logical unit: an export this initiator may reach whose NAA identifier is
    /// `identifier` (its access rule applies: a read-only grant makes it a read-only copy target).
    func copyUnit(identifier: UInt64, initiator: ISCSIInitiatorInfo) -> (any ISCSILogicalUnit)? {
        let session = session(initiator)
        for listing in volumes.listExports(session: session) where reachable(listing.name, session) {
            guard let export = volumes.describe(name: listing.name, session: session) as? VolumeExport,
                VolumeLogicalUnit.identifier(volumeID: export.volumeID, snapshotEpoch: export.snapshotEpoch)
                    & 0x0FFF_FFFF_FFFF_FFFF == identifier
            else { continue }
            guard let attached = try? volumes.attach(name: listing.name, session: session) else { return nil }
            guard let volume = attached as? VolumeExport else {
                volumes.detach(attached, session: session)
                return nil
            }
            return VolumeLogicalUnit(export: volume, locks: compareAndWriteLocks)
        }
        return nil
    }

    func detachCopyUnit(_ unit: any ISCSILogicalUnit, initiator: ISCSIInitiatorInfo) {
        detach(unit, initiator: initiator)
    }

    func metrics(target: String) -> (any ISCSITargetMetrics)? {
        counters.target(target)
    }
}
