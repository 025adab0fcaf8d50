import CairnAPI
import CairnControl
import CairnEngine
import Foundation

extension PoolManagement: CloneGroupService {
    func listClones(source: String?) async throws -> [CloneDTO] {
        try await run { try pool.cloneGroups.list(source: source) }.map(dto)
    }

    func clone(named name: String) async throws -> CloneDTO {
        dto(try await run { try pool.cloneGroups.info(named: name) })
    }

    func addClone(_ request: AddCloneRequest) async throws -> CloneDTO {
        dto(
            try await run {
                try pool.cloneGroups.add(
                    source: request.source, name: request.name, extentSize: request.extentSize, pool: request.pool
                ).clone
            })
    }

    func removeClone(named name: String, deleteVolume: Bool) async throws {
        try await run { try pool.cloneGroups.remove(named: name, deleteVolume: deleteVolume) }
    }

    func fractureClone(named name: String) async throws -> CloneDTO {
        dto(try await run { try pool.cloneGroups.fracture(named: name) })
    }

    func syncClone(named name: String) async throws -> CloneDTO {
        dto(
            try await run {
                _ = try pool.cloneGroups.sync(named: name)
                return try pool.cloneGroups.info(named: name)
            })
    }

    func reverseSyncClone(named name: String) async throws -> CloneDTO {
        dto(
            try await run {
                _ = try pool.cloneGroups.reverseSync(named: name)
                return try pool.cloneGroups.info(named: name)
            })
    }

    func restoreClone(named name: String, protected: Bool) async throws -> CloneDTO {
        dto(
            try await run {
                _ = try pool.cloneGroups.restore(named: name, protected: protected)
                return try pool.cloneGroups.info(named: name)
            })
    }

    func dto(_ clone: CloneInfo) -> CloneDTO {
        CloneDTO(
            name: clone.name, source: clone.source, state: clone.state.rawValue, extentSize: clone.extentSize,
            extentCount: clone.extentCount, deltaExtents: clone.deltaExtents, restoreMapExtents: clone.restoreMapExtents,
            job: clone.job.flatMap { pool.jobs.job($0) }.map(Self.dto), createdAt: Self.timestamp(milliseconds: clone.createdAt))
    }
}
