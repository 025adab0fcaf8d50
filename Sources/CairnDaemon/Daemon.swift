import CairnAPI
import CairnBackup
import CairnControl
import CairnEngine
import CairnRADOS
import CairnIO
import CairnReplication
import Foundation
import ISCSIServer
import Logging
import NBDProtocol
import NIOCore
import NBDServer
import ServiceLifecycle
import UnixSignals

/// `cairn serve`: one process owning one pool, serving its volumes over NBD and its management API,
/// shutting down gracefully on SIGTERM or SIGINT (NBD sessions drain, the pool commits and closes).
public enum Daemon {
    /// The addresses a running daemon serves on, written to `daemon.json` for scripts and tests.
    public struct RuntimeInfo: Codable, Sendable {
        public var pid: Int32
        public var nbd: String
        public var api: String
        /// "host:port" of the iSCSI listener; nil when it is off.
        public var iscsi: String?
    }

    public static func run(_ configuration: DaemonConfiguration, logger: Logger) async throws {
        var options = poolOptions(logger)
        options.cloneExtentDelayNanoseconds = configuration.cloneExtentDelayMilliseconds * 1_000_000
        options.dataWrites = configuration.dataWrites
        options.dataChecksums = configuration.dataChecksums
        let opened = try await openPool(configuration, options: options, logger: logger)
        let pool = opened.pool
        let executor = IOExecutor(threadCount: configuration.ioThreads, queueCapacity: configuration.ioQueueCapacity)
        defer {
            executor.shutdown()
        }
        let metrics = DaemonMetrics()
        // Backups a crash interrupted are finished or abandoned before any session is served.
        let backups: BackupCoordinator
        do {
            backups = try BackupCoordinator(
                pool: pool, dataDirectory: configuration.dataDirectory, logger: logger,
                archiveReadDelay: .milliseconds(configuration.backupArchiveDelayMilliseconds))
        } catch {
            pool.close()
            throw error
        }
        backups.recover()
        let replication: Replication
        let mirrorListener: MirrorTargetServer?
        do {
            let settings = try configuration.replication.settings()
            replication = try Replication(
                pool: pool, executor: executor, dataDirectory: configuration.dataDirectory, settings: settings,
                logger: logger)
            mirrorListener = try await startReplication(
                replication, configuration: configuration, settings: settings, logger: logger)
        } catch {
            pool.close()
            throw error
        }
        let catalog = VolumeCatalog(
            pool: pool, executor: executor, metrics: metrics, access: configuration.access,
            tlsOnlyExports: configuration.tlsMode == .disabled ? [] : configuration.tlsOnlyExports,
            replication: replication, backups: backups)
        var nbdConfiguration = NBDServerConfiguration(host: configuration.nbdHost, port: configuration.nbdPort)
        nbdConfiguration.handshake.tlsMode = configuration.tlsMode
        nbdConfiguration.transmissionTimeouts = configuration.nbdTimeouts
        nbdConfiguration.handshakeTimeout = .milliseconds(Int64(configuration.nbdHandshakeTimeout * 1000))
        if configuration.tlsMode != .disabled {
            do {
                if let keys = configuration.tlsPreSharedKeys {
                    nbdConfiguration.tls = try NBDServerTLS.loadPreSharedKeys(keys)
                } else {
                    guard let certificate = configuration.tlsCertificate, let key = configuration.tlsKey else {
                        throw EngineError(
                            .invalidArgument, "TLS needs a certificate and a private key (--tls-cert, --tls-key)")
                    }
                    nbdConfiguration.tls = try NBDServerTLS.load(
                        certificateChain: certificate, privateKey: key, clientCA: configuration.tlsClientCA,
                        requireClientCertificate: configuration.tlsRequireClientCertificate)
                }
            } catch {
                pool.close()
                throw error
            }
        }
        let nbd: NBDServer
        do {
            nbd = try await NBDServer.start(catalog: catalog, configuration: nbdConfiguration, logger: logger)
        } catch {
            pool.close()
            throw EngineError(
                .busy, "cannot listen for NBD on \(configuration.nbdHost):\(configuration.nbdPort): \(error)")
        }
        let iscsi: ISCSIServer?
        do {
            iscsi = try await startISCSI(configuration, catalog: catalog, logger: logger)
        } catch {
            await nbd.close()
            pool.close()
            throw error
        }
        let nbdAddress = "\(configuration.nbdHost):\(nbd.port)"
        let endpoint = configuration.resolvedAPIEndpoint
        var management = PoolManagement(
            pool: pool, executor: executor, nbdAddress: nbdAddress, metricsRegistry: metrics,
            connectionCount: { nbd.connectionCount + (iscsi?.connectionCount ?? 0) },
            requiresTLS: { [tlsMode = configuration.tlsMode] export in
                tlsMode == .required || (tlsMode == .selective && catalog.requiresTLS(export))
            }, replication: replication)
        management.backups = backups
        let iscsiAddress = iscsi.map { "\(configuration.iscsiHost ?? configuration.nbdHost):\($0.port)" }
        management.protocolSessions = { ProtocolSessions(nbd: nbd, iscsi: iscsi, iscsiAddress: iscsiAddress) }
        management.backendStatus = opened.rados.map(backendStatus)
        var token: String?
        if case .loopback = endpoint {
            do {
                token = try APIToken.load(
                    from: configuration.apiTokenFile
                        ?? DaemonConfiguration.defaultTokenFile(dataDirectory: configuration.dataDirectory),
                    createIfMissing: configuration.apiTokenFile == nil)
            } catch {
                await iscsi?.close()
                await nbd.close()
                pool.close()
                throw error
            }
        }
        let api = ControlServer.makeApplication(
            service: management, endpoint: endpoint, token: token, recentErrors: configuration.recentErrors,
            logger: logger, backups: BackupManagement(coordinator: backups, pool: pool, executor: executor))
        let runtimeFile = DaemonConfiguration.runtimeFile(dataDirectory: configuration.dataDirectory)
        try writeRuntimeInfo(
            RuntimeInfo(
                pid: getpid(), nbd: nbdAddress, api: describe(endpoint),
                iscsi: iscsi.map { "\(configuration.iscsiHost ?? configuration.nbdHost):\($0.port)" }),
            to: runtimeFile)
        logger.info(
            "cairn serving",
            metadata: [
                "pool": "\(opened.rados?.location ?? configuration.dataDirectory)", "nbd": "\(nbdAddress)", "api": "\(describe(endpoint))",
            ])

        replication.resume()
        let group = ServiceGroup(
            configuration: ServiceGroupConfiguration(
                services: [
                    .init(service: api),
                    .init(service: NBDService(server: nbd, logger: logger)),
                ] + (iscsi.map { [.init(service: ISCSIService(server: $0))] } ?? []) + (configuration.parentToFollow.map {
                    [.init(service: ParentWatch(parent: $0, logger: logger), successTerminationBehavior: .gracefullyShutdownGroup)]
                } ?? [])
                    + (opened.rados.map {
                        [.init(service: OwnershipWatch(media: $0, logger: logger), successTerminationBehavior: .gracefullyShutdownGroup)]
                    } ?? []),
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: logger))
        do {
            try await group.run()
        } catch {
            logger.error("service failed", metadata: ["error": "\(error)"])
        }
        // Services are down: no session can issue I/O any more. Commit and release the pool.
        await iscsi?.close()
        await nbd.close()
        replication.shutdown()
        await mirrorListener?.close()
        pool.close()
        do {
            try AtomicFile.remove(runtimeFile)
        } catch {
            logger.error("cannot remove the runtime file", metadata: ["file": "\(runtimeFile)", "error": "\(error)"])
        }
        if case .unixSocket(let path) = endpoint { unlink(path) }
        if let media = opened.rados {
            if case .lost(let reason) = media.ownership.state {
                logger.critical("cairn stopped: fenced", metadata: ["reason": "\(reason)"])
                throw PoolFencedError(description: "stopped serving: \(reason)")
            }
            media.ownership.release()
        }
        logger.info("cairn stopped")
    }

    static func poolOptions(_ logger: Logger) -> PoolOptions {
        var options = PoolOptions()
        options.logger = logger
        return options
    }

    static func describe(_ endpoint: ControlServer.Endpoint) -> String {
        switch endpoint {
        case .unixSocket(let path): "unix:\(path)"
        case .loopback(let port): "http://127.0.0.1:\(port)"
        }
    }

    static func writeRuntimeInfo(_ info: RuntimeInfo, to path: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let data = try encoder.encode(info)
        // Readers never see a half-written file, and a stale one after a crash names the old pid.
        do {
            try AtomicFile.replace(path, with: Array(data))
        } catch {
            throw EngineError(.ioFailure, "cannot write the runtime file \(path): \(error)", cause: error)
        }
    }
}

/// Runs the NBD server inside the service group: waits for the shutdown signal, then drains
/// sessions (requests in flight finish, new ones get ESHUTDOWN).
struct NBDService: Service {
    let server: NBDServer
    let logger: Logger

    func run() async throws {
        try? await gracefulShutdown()
        await server.shutdown()
    }
}
