import CairnAPI
import CairnEngine
import CairnRADOS
import Foundation
import Logging
import ServiceLifecycle

/// The Ceph cluster could not be reached (or refused this client) when the daemon started.
public struct ClusterUnreachableError: Error, CustomStringConvertible {
    public var description: String
}

/// Another node took the pool over: this daemon was fenced (blocklisted) or lost its lease, and stopped.
public struct PoolFencedError: Error, CustomStringConvertible {
    public var description: String
}

extension Daemon {
    /// The opened pool and, on a cluster, its media (for ownership and status).
    struct OpenedPool {
        let pool: Pool
        let rados: RadosMedia?
    }

    /// Opens the pool where the configuration says it lives: the data directory, or a RADOS pool (then
    /// the data directory keeps only the daemon's local files: socket, token, daemon.json). A standby
    /// waits here until the owner's lease lapses, fences it and takes the pool.
    static func openPool(_ configuration: DaemonConfiguration, options: PoolOptions, logger: Logger) async throws
        -> OpenedPool
    {
        guard let rados = configuration.rados else {
            return OpenedPool(pool: try Pool.open(directory: configuration.dataDirectory, options: options), rados: nil)
        }
        do {
            try FileManager.default.createDirectory(atPath: configuration.dataDirectory, withIntermediateDirectories: true)
        } catch {
            throw EngineError(.ioFailure, "cannot create \(configuration.dataDirectory)", cause: error)
        }
        let standby = configuration.standby
        let lease = configuration.radosLeaseSeconds
        let media: RadosMedia = try await withCheckedThrowingContinuation { continuation in
            // Connecting and standing by block (librados is synchronous): a thread of their own.
            Thread.detachNewThread {
                do {
                    let log: (String) -> Void = { logger.notice("\($0)") }
                    let media =
                        standby
                        ? try RadosMedia.standby(rados, leaseSeconds: lease, log: log)
                        : try RadosMedia(rados, leaseSeconds: lease, log: log)
                    continuation.resume(returning: media)
                } catch let error as RadosError {
                    continuation.resume(
                        throwing: ClusterUnreachableError(
                            description: "cannot use the Ceph cluster (\(rados.confPath), client.\(rados.clientID), "
                                + "pool \(rados.pool)): \(error)"))
                } catch let error as CephSQLiteVFS.VFSLoadError {
                    continuation.resume(throwing: ClusterUnreachableError(description: error.reason))
                } catch {
                    continuation.resume(throwing: error)
                }
            }
        }
        do {
            let pool = try Pool(media: media, options: options)
            return OpenedPool(pool: pool, rados: media)
        } catch {
            media.ownership.release()
            throw error
        }
    }

    /// `cairn pool status`'s backend section for a RADOS pool: asks the monitors each time.
    static func backendStatus(_ media: RadosMedia) -> @Sendable () -> PoolBackendDTO {
        {
            var dto = PoolBackendDTO(kind: "rados", location: media.location, objectSize: media.objectSize)
            do {
                dto.clusterHealth = try media.cluster.health()
                let usage = try media.cluster.usage()
                dto.clusterTotalBytes = usage.totalBytes
                dto.clusterUsedBytes = usage.usedBytes
                dto.clusterAvailableBytes = usage.availableBytes
            } catch {
                dto.clusterHealth = "unreachable: \(error)"
            }
            switch media.ownership.state {
            case .held: dto.ownership = "held (lease \(media.ownership.leaseSeconds) s, renewed)"
            case .lost(let reason): dto.ownership = "lost: \(reason)"
            case .released: dto.ownership = "released"
            }
            return dto
        }
    }
}

/// Stops the daemon (gracefully shutting the service group down) when the pool is taken away from this
/// node: its writes fail from that moment (the cluster refuses a fenced client), so it says why and exits.
struct OwnershipWatch: Service {
    let media: RadosMedia
    let logger: Logger

    func run() async throws {
        let (lost, continuation) = AsyncStream.makeStream(of: String.self)
        media.ownership.whenLost { reason in
            continuation.yield(reason)
            continuation.finish()
        }
        try? await cancelWhenGracefulShutdown {
            for await reason in lost {
                logger.critical("this node no longer owns the pool; stopping", metadata: ["reason": "\(reason)"])
                return
            }
        }
    }
}
