// swift-tools-version:6.2
// Cairn: a software storage array. One module per layer; dependencies point one way:
//   cairn (executable) → CairnCLI → CairnDaemon → {NBDServer, ISCSIServer, CairnControl, CairnReplication,
//                                                   CairnBackup, CairnRADOS, CairnEngine}
//   CairnReplication → {MirrorProtocol (wire only, NIOCore), CairnEngine}
//   NBDServer → NBDProtocol, ISCSIServer → ISCSIProtocol (wire only, NIOCore)
//   CairnBackup → {CairnArchive, CairnEngine} ; CairnRADOS → {CRados (librados), CairnEngine}
//   CairnEngine → CairnIO → CCairnIO (syscall shim)
//   CairnCLI → NBDClient → NBDProtocol (a small async NBD client, for Cairn's extensions)
// Every target declares exactly the modules it imports.
import PackageDescription

let strict: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
]

// The products most targets import, named once.
let nioCore: Target.Dependency = .product(name: "NIOCore", package: "swift-nio")
let nioPosix: Target.Dependency = .product(name: "NIOPosix", package: "swift-nio")
let nioTLS: Target.Dependency = .product(name: "NIOTLS", package: "swift-nio")
let nioEmbedded: Target.Dependency = .product(name: "NIOEmbedded", package: "swift-nio")
let nioHTTP1: Target.Dependency = .product(name: "NIOHTTP1", package: "swift-nio")
let nioSSL: Target.Dependency = .product(name: "NIOSSL", package: "swift-nio-ssl")
let logging: Target.Dependency = .product(name: "Logging", package: "swift-log")
let crypto: Target.Dependency = .product(name: "Crypto", package: "swift-crypto")
let grdb: Target.Dependency = .product(name: "GRDB", package: "GRDB.swift")

let package = Package(
    name: "cairn",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "cairn", targets: ["cairn"]),
        .library(name: "NBDProtocol", targets: ["NBDProtocol"]),
        .library(name: "NBDClient", targets: ["NBDClient"]),
        .library(name: "CairnEngine", targets: ["CairnEngine"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1", traits: []),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "3.12.3"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "5.0.1"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-certificates.git", from: "1.21.1"),
        .package(url: "https://github.com/apple/swift-asn1.git", from: "1.7.4"),
    ],
    targets: [
        // Syscall layer: Linux calls Glibc does not import, built with _GNU_SOURCE.
        .target(name: "CCairnIO"),
        .target(
            name: "CairnIO",
            dependencies: ["CCairnIO", "CMirrorCRC"],
            swiftSettings: strict
        ),
        // Storage engine: pool, chunk store, maps, durability. No networking.
        .target(
            name: "CairnEngine",
            dependencies: ["CairnIO", "CMirrorCRC", grdb, logging, crypto],
            swiftSettings: strict
        ),
        // librados' C API (Debian ships no .pc file for it: the module map links "rados").
        .systemLibrary(name: "CRados", providers: [.apt(["librados-dev"])]),
        // Pools on Ceph RADOS: a small librados client (aio, locks, blocklist, cluster status), slot
        // files striped over objects, metadata through Ceph's SQLite VFS, one-writer ownership.
        .target(
            name: "CairnRADOS",
            dependencies: [
                "CRados", "CairnEngine", "CairnIO", grdb,
                .product(name: "GRDBSQLite", package: "GRDB.swift"),
            ],
            swiftSettings: strict
        ),
        // Backup archive format: self-describing, per-extent SHA-256, sparse, streamable. No I/O
        // beyond reading and writing a byte stream (CCairnIO only to spread a file's writeback).
        .target(
            name: "CairnArchive",
            dependencies: ["CCairnIO", crypto],
            swiftSettings: strict
        ),
        // Consistent backups without quiescing: the one-way mirror (images A and B, range
        // locks, session routing), archiving image A and restoring archives. No networking.
        .target(
            name: "CairnBackup",
            dependencies: ["CairnArchive", "CairnEngine", "CairnIO", logging],
            swiftSettings: strict
        ),
        // NBD wire protocol: types, frame parser, reply encoder, handshake state machine. NIOCore only.
        .target(
            name: "NBDProtocol",
            dependencies: [nioCore],
            swiftSettings: strict
        ),
        // NBD server: channel handlers, back-pressure, export catalog. Storage behind a protocol.
        .target(
            name: "NBDServer",
            dependencies: [
                "NBDProtocol", nioCore, nioPosix, nioSSL, nioTLS, logging,
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
            ],
            swiftSettings: strict
        ),
        // NBD client: connect, negotiate (structured replies, meta contexts, GO), pipelined requests,
        // and Cairn's COPY_AND_WRITE extension.
        .target(
            name: "NBDClient",
            dependencies: ["NBDProtocol", nioCore, nioPosix, nioSSL, nioTLS],
            swiftSettings: strict
        ),
        // CRC-32C with the CPU's instruction (C: Swift cannot reach it), table fallback.
        .target(name: "CMirrorCRC"),
        // Remote mirror wire protocol: frames, CRC32C, message payloads. NIOCore only (and the
        // CRC shim): no sockets.
        .target(
            name: "MirrorProtocol",
            dependencies: ["CMirrorCRC", nioCore],
            swiftSettings: strict
        ),
        // Remote mirroring: the target's replication listener, the primary's link, change map, resync.
        .target(
            name: "CairnReplication",
            dependencies: ["MirrorProtocol", "CairnEngine", "CairnIO", nioCore, nioPosix, nioSSL, crypto, logging],
            swiftSettings: strict
        ),
        // Management API types shared by the daemon and the CLI (Codable, no dependencies).
        .target(name: "CairnAPI", swiftSettings: strict),
        // Management API server (HTTP/JSON on a unix socket).
        .target(
            name: "CairnControl",
            dependencies: [
                "CairnAPI",
                .product(name: "Hummingbird", package: "hummingbird"),
                logging, crypto, nioCore,
            ],
            swiftSettings: strict
        ),
        // The daemon: wires engine, NBD server and control API into one service group.
        .target(
            name: "CairnDaemon",
            dependencies: [
                "CairnEngine", "CairnIO", "NBDServer", "NBDProtocol", "CairnControl", "CairnAPI", "CairnReplication", "MirrorProtocol",
                "CairnBackup", "CairnArchive", "ISCSIServer", "ISCSIProtocol", "CairnRADOS",
                nioCore, nioPosix, logging,
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            swiftSettings: strict
        ),
        // iSCSI wire protocol (RFC 7143): PDU codec with CRC-32C digests, text keys, login and session
        // sequencing, SCSI CDB parsing, sense and parameter data. NIOCore (and the CRC shim) only.
        .target(
            name: "ISCSIProtocol",
            dependencies: ["CMirrorCRC", nioCore, crypto],
            swiftSettings: strict
        ),
        // iSCSI target: the listener, one channel handler per connection, logical units behind a protocol.
        .target(
            name: "ISCSIServer",
            dependencies: ["ISCSIProtocol", nioCore, nioPosix, logging],
            swiftSettings: strict
        ),
        // Command implementations (serve, volume, pool) talking to the daemon's API.
        .target(
            name: "CairnCLI",
            dependencies: [
                "CairnAPI", "CairnControl", "CairnDaemon", "CairnIO", "NBDClient", "NBDProtocol", "CairnArchive",
                "CairnBackup", "CairnRADOS", "ISCSIProtocol",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                logging, nioCore, nioHTTP1,
                .product(name: "Yams", package: "Yams"),
            ],
            swiftSettings: strict
        ),
        .executableTarget(name: "cairn", dependencies: ["CairnCLI"], swiftSettings: strict),

        // Fuzz targets (the daemon in-process, the mirror and archive decoders, the configuration file) and
        // the executable that runs them: under libFuzzer (scripts/fuzz) or as a corpus replay (the tests).
        .target(
            name: "CairnFuzz",
            dependencies: [
                "CairnArchive", "CairnCLI", "CairnDaemon", "CairnEngine", "ISCSIProtocol", "MirrorProtocol",
                logging, nioCore,
            ],
            swiftSettings: strict
        ),
        .executableTarget(name: "cairn-fuzz", dependencies: ["CairnFuzz"], swiftSettings: strict),

        // Test doubles for one layer (media that lose unsynced writes like a power cut does) and the one
        // seeded generator every randomized test uses.
        .target(name: "CairnTestSupport", dependencies: ["CairnEngine", "CairnIO"], swiftSettings: strict),

        .testTarget(
            name: "CairnIOTests", dependencies: ["CairnIO", "CairnTestSupport", "InteropSupport"], swiftSettings: strict),
        // Against a real one-machine Ceph cluster (scripts/ceph-cluster; scripts/test starts it).
        .testTarget(
            name: "CairnRADOSTests",
            dependencies: ["CairnRADOS", "CairnEngine", "CairnIO", "CairnTestSupport", "InteropSupport", logging],
            swiftSettings: strict
        ),
        .testTarget(
            name: "CairnControlTests",
            dependencies: ["CairnControl", "CairnAPI", logging],
            swiftSettings: strict
        ),
        .testTarget(
            name: "CairnEngineTests",
            dependencies: ["CairnEngine", "CairnIO", "CairnTestSupport", "InteropSupport", logging],
            swiftSettings: strict
        ),
        .testTarget(
            name: "CairnArchiveTests",
            dependencies: ["CairnArchive", "CairnTestSupport", crypto],
            swiftSettings: strict),
        .testTarget(
            name: "CairnBackupTests",
            dependencies: ["CairnBackup", "CairnArchive", "CairnEngine", "CairnIO", "CairnTestSupport", logging],
            swiftSettings: strict
        ),
        .testTarget(
            name: "NBDProtocolTests",
            dependencies: ["NBDProtocol", "CairnTestSupport", nioCore],
            swiftSettings: strict
        ),
        .testTarget(
            name: "ISCSIProtocolTests",
            dependencies: ["ISCSIProtocol", "CairnTestSupport", nioCore],
            swiftSettings: strict
        ),
        .testTarget(
            name: "ISCSIServerTests",
            dependencies: ["ISCSIServer", "ISCSIProtocol", nioCore, nioEmbedded, logging],
            swiftSettings: strict
        ),
        .testTarget(
            name: "MirrorProtocolTests",
            dependencies: ["MirrorProtocol", "CairnTestSupport", nioCore, nioEmbedded],
            swiftSettings: strict
        ),
        .testTarget(
            name: "CairnReplicationTests",
            dependencies: [
                "CairnReplication", "MirrorProtocol", "CairnEngine", "CairnIO", "CairnTestSupport",
                nioCore, nioPosix, logging,
            ],
            swiftSettings: strict
        ),
        // Runs real clients (qemu-io, nbdinfo, fio, ...) for the interop tests of every layer.
        .target(name: "InteropSupport", path: "Tests/InteropSupport", swiftSettings: strict),
        .testTarget(
            name: "NBDServerTests",
            dependencies: [
                "NBDServer", "NBDProtocol", "InteropSupport", "CairnTestSupport", nioCore, nioPosix, logging,
            ],
            swiftSettings: strict
        ),
        // NBDClient against a real daemon, and the CLI commands built on it.
        .testTarget(
            name: "NBDClientTests",
            dependencies: ["NBDClient", "NBDProtocol", "InteropSupport", nioCore],
            swiftSettings: strict
        ),
        .testTarget(
            name: "InteropTests",
            dependencies: ["CairnAPI", "CairnDaemon", "InteropSupport", "NBDServer", "CairnTestSupport"],
            swiftSettings: strict
        ),
    ]
)
