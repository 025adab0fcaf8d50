import CairnAPI
import Prometheus
import Synchronization

/// The daemon's Prometheus metrics (`GET /metrics` on the management API).
///
/// Two kinds: request metrics per export, counted on the data path by `VolumeExport` (a few atomic
/// increments and one histogram record per request), and state — pool space, backend I/O, volumes,
/// jobs, connections — read from the engine when a scrape comes, so the data path pays nothing for it.
/// One registry per daemon, not the process-global `MetricsSystem`: tests run several daemons' worth of
/// servers in one process.
final class DaemonMetrics: Sendable {
    let registry = PrometheusCollectorRegistry()
    private let exports = Mutex<[String: ExportMetrics]>([:])
    /// Gauges with a volume or job label, by label value, so that a deleted volume or a forgotten job
    /// stops being reported.
    private let labelled = Mutex<[String: [Gauge]]>([:])
    /// Backend byte counters already added to the Prometheus counters (the engine's are cumulative).
    private let reportedBackendBytes = Mutex<[String: UInt64]>([:])

    /// Request latency buckets: from a page-cache hit (tens of microseconds) to a FLUSH behind seconds of
    /// write-back.
    static let latencyBuckets: [Duration] = [
        .microseconds(50), .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1),
        .milliseconds(2.5), .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50),
        .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(2.5), .seconds(10),
    ]

    static func name(_ subsystem: String?, _ metric: String, _ unit: String?, _ help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(namespace: "cairn", subsystem: subsystem, metricName: metric, unitName: unit, helpText: help)
    }

    /// The request metrics of one export name (`volume` or `volume@snapshot`), made on first use.
    func export(_ name: String) -> ExportMetrics {
        exports.withLock { cache in
            if let metrics = cache[name] { return metrics }
            let metrics = ExportMetrics(registry: registry, export: name)
            cache[name] = metrics
            return metrics
        }
    }

    /// Brings the state metrics up to date and renders everything in the Prometheus text format.
    func render(pool: PoolStatusDTO, volumes: [VolumeDTO], jobs: [JobDTO], connections: Int) -> String {
        let space = Self.name("pool", "space", "bytes", "Pool space by kind (provisioned, used, shared, pending_free, file)")
        for (kind, value) in [
            ("provisioned", pool.provisionedBytes), ("used", pool.usedBytes), ("shared", pool.sharedBytes),
            ("pending_free", pool.pendingFreeBytes), ("file", pool.fileBytes),
        ] {
            registry.makeGauge(descriptor: space, labels: [("kind", kind)]).set(Double(value))
        }
        if let available = pool.filesystemAvailableBytes {
            registry.makeGauge(descriptor: space, labels: [("kind", "filesystem_available")]).set(Double(available))
        }
        registry.makeGauge(descriptor: Self.name("pool", "failed", nil, "1 when the pool stopped accepting writes"))
            .set(pool.failure == nil ? 0.0 : 1.0)
        let backend = Self.name(
            "pool", "backend", "bytes_total",
            "Slot-file I/O by the engine: written for hosts, copied for copy-on-write and COPY_AND_WRITE, zeroed, read")
        for (kind, total) in [
            ("written", pool.bytesWritten), ("copied", pool.bytesCopied), ("zeroed", pool.bytesZeroed),
            ("read", pool.bytesRead),
        ] {
            let delta = reportedBackendBytes.withLock { reported -> UInt64 in
                let delta = total &- (reported[kind] ?? 0)
                reported[kind] = total
                return delta
            }
            if delta > 0 { registry.makeCounter(descriptor: backend, labels: [("kind", kind)]).increment(by: Int64(delta)) }
        }
        if let mismatches = pool.checksumMismatches {
            let descriptor = Self.name(
                "pool", "checksum_mismatches", "total", "Data blocks read that did not match their checksum (each read failed)")
            let delta = reportedBackendBytes.withLock { reported -> UInt64 in
                let delta = mismatches &- (reported["checksum_mismatches"] ?? 0)
                reported["checksum_mismatches"] = mismatches
                return delta
            }
            // Created at zero so a scraper sees the series before the first mismatch.
            registry.makeCounter(descriptor: descriptor).increment(by: Int64(delta))
        }
        registry.makeGauge(descriptor: Self.name("nbd", "connections", nil, "Open NBD connections"))
            .set(Double(connections))

        var current: [String: [Gauge]] = [:]
        let volumeBytes = Self.name("volume", "space", "bytes", "Volume size and the pool space it uses")
        let snapshots = Self.name("volume", "snapshots", nil, "Snapshots of the volume")
        for volume in volumes {
            current["volume:" + volume.name] = [
                registry.makeGauge(descriptor: volumeBytes, labels: [("volume", volume.name), ("kind", "size")]),
                registry.makeGauge(descriptor: volumeBytes, labels: [("volume", volume.name), ("kind", "allocated")]),
                registry.makeGauge(descriptor: snapshots, labels: [("volume", volume.name)]),
            ]
            current["volume:" + volume.name]![0].set(Double(volume.size))
            current["volume:" + volume.name]![1].set(Double(volume.allocatedBytes))
            current["volume:" + volume.name]![2].set(Double(volume.snapshotCount))
        }
        let progress = Self.name("job", "progress", "ratio", "Done / total of a running job (0 to 1)")
        let running = Self.name("jobs", "running", nil, "Jobs running, by kind")
        var runningByKind: [String: Int] = [:]
        for job in jobs where job.state == "running" {
            runningByKind[job.kind, default: 0] += 1
            let gauge = registry.makeGauge(
                descriptor: progress, labels: [("job", "\(job.id)"), ("kind", job.kind), ("target", job.target)])
            gauge.set(job.total > 0 ? Double(job.done) / Double(job.total) : 0)
            current["job:\(job.id)"] = [gauge]
        }
        for kind in Set(runningByKind.keys).union(["dedup", "reclaim"]) {
            registry.makeGauge(descriptor: running, labels: [("kind", kind)]).set(Double(runningByKind[kind] ?? 0))
        }
        let gone = labelled.withLock { previous -> [Gauge] in
            let gone = previous.filter { current[$0.key] == nil }.flatMap(\.value)
            previous = current
            return gone
        }
        for gauge in gone { registry.unregisterGauge(gauge) }
        forgetExports(ofVolumesOtherThan: Set(volumes.map(\.name)))
        return registry.emitToString()
    }

    /// Drops the request series of exports whose volume is gone (deleted or renamed), so that a pool that
    /// creates and deletes volumes all day does not report, and keep in memory, every name it ever served.
    /// A connection still holding the old series counts into it unreported; a new attach makes new ones.
    private func forgetExports(ofVolumesOtherThan live: Set<String>) {
        let gone = exports.withLock { cache -> [ExportMetrics] in
            let names = cache.keys.filter { !live.contains(VolumeCatalog.split($0).volume) }
            return names.compactMap { cache.removeValue(forKey: $0) }
        }
        for metrics in gone { metrics.unregister(from: registry) }
    }
}

/// Request counters and latency of one export, by NBD command.
final class ExportMetrics: Sendable {
    /// The commands counted; anything else is not a request a client can send to a volume.
    enum Operation: String, CaseIterable, Sendable {
        case read, write, flush, trim, writeZeroes = "write_zeroes", cache, blockStatus = "block_status"
        case copyAndWrite = "copy_and_write"

        /// Position in `allCases`.
        var index: Int {
            switch self {
            case .read: 0
            case .write: 1
            case .flush: 2
            case .trim: 3
            case .writeZeroes: 4
            case .cache: 5
            case .blockStatus: 6
            case .copyAndWrite: 7
            }
        }
    }

    struct Series: Sendable {
        let requests: Counter
        let errors: Counter
        let latency: DurationHistogram
    }

    /// Indexed by `Operation.allCases` order: an array index, not a hash, on every request.
    private let series: [Series]
    let bytesRead: Counter
    let bytesWritten: Counter

    init(registry: PrometheusCollectorRegistry, export: String) {
        let requests = DaemonMetrics.name("nbd", "requests", "total", "NBD requests by export and command")
        let errors = DaemonMetrics.name("nbd", "request_errors", "total", "NBD requests that failed")
        let latency = DaemonMetrics.name(
            "nbd", "request_duration", "seconds", "Time from a request's dispatch to the export's completion")
        precondition(Operation.allCases.enumerated().allSatisfy { $0.offset == $0.element.index })
        self.series = Operation.allCases.map { operation in
            let labels = [("export", export), ("command", operation.rawValue)]
            return Series(
                requests: registry.makeCounter(descriptor: requests, labels: labels),
                errors: registry.makeCounter(descriptor: errors, labels: labels),
                latency: registry.makeDurationHistogram(
                    descriptor: latency, labels: labels, buckets: DaemonMetrics.latencyBuckets))
        }
        let bytes = DaemonMetrics.name("nbd", "data", "bytes_total", "Payload bytes read and written over NBD")
        bytesRead = registry.makeCounter(descriptor: bytes, labels: [("export", export), ("direction", "read")])
        bytesWritten = registry.makeCounter(descriptor: bytes, labels: [("export", export), ("direction", "write")])
    }

    func unregister(from registry: PrometheusCollectorRegistry) {
        for series in series {
            registry.unregisterCounter(series.requests)
            registry.unregisterCounter(series.errors)
            registry.unregisterDurationHistogram(series.latency)
        }
        registry.unregisterCounter(bytesRead)
        registry.unregisterCounter(bytesWritten)
    }

    /// Counts one finished request.
    func record(_ operation: Operation, since start: ContinuousClock.Instant, failed: Bool = false) {
        let series = self.series[operation.index]
        series.requests.increment()
        if failed { series.errors.increment() }
        series.latency.record(ContinuousClock.now - start)
    }
}
