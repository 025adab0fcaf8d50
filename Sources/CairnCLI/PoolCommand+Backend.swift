import CairnAPI
import Foundation

extension PoolCommand.Status {
    /// `cairn pool status` lines for where the pool lives: the backend and, on Ceph, the cluster's health,
    /// fullness and this node's ownership.
    static func backendFields(_ backend: PoolBackendDTO?) -> [(String, String)] {
        guard let backend else { return [("backend", "directory")] }
        var pairs = [("backend", "\(backend.kind) \(backend.location)")]
        if let health = backend.clusterHealth { pairs.append(("cluster health", health)) }
        if let total = backend.clusterTotalBytes, let used = backend.clusterUsedBytes {
            let percent = total == 0 ? 0 : Double(used) * 100 / Double(total)
            pairs.append(
                ("cluster used", "\(Output.size(used)) of \(Output.size(total)) (\(String(format: "%.1f", percent))%)"))
        }
        if let available = backend.clusterAvailableBytes { pairs.append(("cluster free", Output.size(available))) }
        if let size = backend.objectSize { pairs.append(("object size", Output.size(size))) }
        if let ownership = backend.ownership { pairs.append(("ownership", ownership)) }
        return pairs
    }
}
