import CairnEngine
import CairnIO
import NBDServer

/// The NBD export catalog over the pool: every volume is an export named after it, visible as soon as
/// it is created. Sessions attach to a volume by id, so a rename does not disturb them.
final class VolumeCatalog: NBDExportCatalog {
    let pool: Pool
    let executor: IOExecutor

    init(pool: Pool, executor: IOExecutor) {
        self.pool = pool
        self.executor = executor
    }

    func listExports(session: NBDSessionInfo) -> [NBDExportListing] {
        pool.listVolumes().map {
            NBDExportListing(name: $0.name, description: "cairn volume, \($0.size) bytes")
        }
    }

    func describe(name: String, session: NBDSessionInfo) -> (any NBDExport)? {
        guard let id = try? pool.volumeID(named: name) else { return nil }
        return VolumeExport(pool: pool, executor: executor, volumeID: id, name: name)
    }

    func attach(name: String, session: NBDSessionInfo) throws -> any NBDExport {
        do {
            let id = try pool.volumeID(named: name)
            try pool.attach(volumeID: id)
            return VolumeExport(pool: pool, executor: executor, volumeID: id, name: name)
        } catch let error as EngineError where error.code == .notFound {
            throw NBDExportError(.invalid, "no export named '\(name)'")
        } catch {
            throw VolumeExport.wireError(error)
        }
    }

    func detach(_ export: any NBDExport, session: NBDSessionInfo) {
        guard let export = export as? VolumeExport else { return }
        pool.detach(volumeID: export.volumeID)
    }
}
