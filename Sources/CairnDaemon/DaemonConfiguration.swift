import CairnControl
import CairnIO
import CairnRADOS
import Glibc
import ISCSIProtocol
import NBDProtocol

/// Everything `cairn serve` needs to know.
public struct DaemonConfiguration: Sendable {
    /// The pool directory.
    public var dataDirectory: String
    public var nbdHost = "127.0.0.1"
    /// 10809 is NBD's IANA port; 0 picks a free one (tests), reported in `daemon.json`.
    public var nbdPort = 10809
    /// NBD transmission timeouts: idle (nil: none) and payload progress (`NBDLivenessStateMachine`).
    public var nbdTimeouts = NBDLivenessStateMachine.Timeouts()
    /// Seconds a connection may take to finish option negotiation (`--nbd-handshake-timeout`).
    public var nbdHandshakeTimeout: Double = 10

    /// The iSCSI listener: `iscsiHost` nil means the NBD host; `iscsiPort` nil means off. 3260 is iSCSI's
    /// IANA port; `resolvedISCSIPort` turns the default into 0 (a free port) when the NBD port is 0, so
    /// daemons started for tests never contend for 3260.
    public var iscsiHost: String?
    public var iscsiPort: Int? = 3260
    /// True when the iSCSI port was set explicitly (flag or file), not left at its default.
    public var iscsiPortExplicit = false
    /// CHAP for iSCSI logins (`iscsi.chap` in the file); the CHAP name is the session's client identity.
    public var iscsiChap = ISCSIChapConfiguration.disabled

    public var resolvedISCSIPort: Int? {
        guard let port = iscsiPort else { return nil }
        return !iscsiPortExplicit && nbdPort == 0 ? 0 : port
    }

    /// Management API endpoint; nil means `<data directory>/cairn.sock`.
    public var apiEndpoint: ControlServer.Endpoint?
    /// Threads doing blocking file I/O. Buffered I/O is mostly CPU work (copies into the page cache), and
    /// FLUSH waits on the commit thread, not here, so a few suffice; more only contend on the slot file's
    /// inode lock. Measured with 4 KiB random overwrites at QD32 on two cores: 2 threads 49.6k IOPS,
    /// 4 threads 49.0k, 8 threads 23.6k (docs/BENCHMARKS.md).
    public var ioThreads = 4
    /// Jobs waiting for an I/O thread. The NBD server caps requests in flight per connection and the
    /// number of connections, so this bound is a safety net, sized above their product.
    public var ioQueueCapacity = 16384
    /// Pause between two extents a clone job copies, in milliseconds: a sync rate limit (0: none).
    public var cloneExtentDelayMilliseconds: UInt64 = 0
    /// Pause per MiB a backup archive reads, in milliseconds: an archive rate limit (0: none).
    public var backupArchiveDelayMilliseconds: UInt64 = 0
    /// How slot files are written: `buffered` (the page cache), `direct` (O_DIRECT) or `write-through`.
    public var dataWrites: StorageWriteMode = .buffered
    /// Checksum slot data and verify every read (`PoolOptions.dataChecksums`).
    public var dataChecksums = true

    /// NBD over TLS (STARTTLS): off, selective (offered; exports outside `tlsOnlyExports` also work
    /// without it) or required.
    public var tlsMode: NBDTLSMode = .disabled
    /// Under selective TLS, the exports reachable only after STARTTLS: volume names, exact or a prefix
    /// ending in `*` (the same patterns as access rules; `vol@snap` is judged by its volume).
    public var tlsOnlyExports: [String] = []
    /// PEM files: the server's certificate chain and key, and the CA client certificates must chain to
    /// (optional: without it clients are not asked for a certificate).
    public var tlsCertificate: String?
    public var tlsKey: String?
    public var tlsClientCA: String?
    /// A GnuTLS `psktool` key file: TLS with pre-shared keys instead of certificates (the username is
    /// the client's identity for access rules).
    public var tlsPreSharedKeys: String?
    /// With a client CA: false also admits TLS clients without a certificate (no identity).
    public var tlsRequireClientCertificate = true
    /// Export access rules; nil: everyone may open everything read-write.
    public var access: ExportAccessPolicy?
    /// Where the log handler keeps the last warnings and errors, for the status page.
    public var recentErrors: RecentErrors?
    /// Remote mirroring: the replication listener, shared secret, timeouts (ReplicationConfiguration.swift).
    public var replication = ReplicationConfiguration()
    /// Shut down when this process (the daemon's parent, `--exit-with-parent`) exits: a daemon started by
    /// a test runner or a supervisor script does not outlive it. Read at the very start of the command, so
    /// a parent that exits while the pool opens is still noticed.
    public var parentToFollow: pid_t?

    /// The pool lives in this Ceph RADOS pool instead of the data directory (nil: in the directory).
    public var rados: RadosConfiguration?
    /// With `rados`: wait until the serving node's lease lapses, fence it, then take the pool and serve.
    public var standby = false
    /// With `rados`: how long this node's hold on the pool lasts without renewal.
    public var radosLeaseSeconds = PoolOwnership.defaultLeaseSeconds

    public init(dataDirectory: String) {
        self.dataDirectory = dataDirectory
    }

    /// The API endpoint after defaults.
    /// File holding the management API's token when it listens on TCP; nil: `api.token` in the data
    /// directory, created with a random token if missing.
    public var apiTokenFile: String?

    public static func defaultTokenFile(dataDirectory: String) -> String { dataDirectory + "/api.token" }

    public var resolvedAPIEndpoint: ControlServer.Endpoint {
        apiEndpoint ?? .unixSocket(path: Self.defaultSocketPath(dataDirectory: dataDirectory))
    }

    public static func defaultSocketPath(dataDirectory: String) -> String {
        dataDirectory + "/cairn.sock"
    }

    /// File the running daemon writes its addresses to (removed on clean shutdown).
    public static func runtimeFile(dataDirectory: String) -> String {
        dataDirectory + "/daemon.json"
    }
}
