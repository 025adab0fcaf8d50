import CairnControl

/// Everything `cairn serve` needs to know.
public struct DaemonConfiguration: Sendable {
    /// The pool directory.
    public var dataDirectory: String
    public var nbdHost = "127.0.0.1"
    /// 10809 is NBD's IANA port; 0 picks a free one (tests), reported in `daemon.json`.
    public var nbdPort = 10809
    /// Management API endpoint; nil means `<data directory>/cairn.sock`.
    public var apiEndpoint: ControlServer.Endpoint?
    /// Threads doing blocking file I/O: enough to keep a disk's queue busy on a small machine (buffered
    /// I/O mostly hits the page cache; this mostly bounds fdatasync and copy concurrency).
    public var ioThreads = 8
    /// Jobs waiting for an I/O thread. The NBD server caps requests in flight per connection and the
    /// number of connections, so this bound is a safety net, sized above their product.
    public var ioQueueCapacity = 16384

    public init(dataDirectory: String) {
        self.dataDirectory = dataDirectory
    }

    /// The API endpoint after defaults.
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
