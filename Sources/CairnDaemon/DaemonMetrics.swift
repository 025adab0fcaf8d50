import CairnAPI
import CairnBackup
import CairnReplication
import Prometheus
import Synchronization

/// The daemon's Prometheus metrics (`GET /metrics` on the management API).
///
/// Two kinds: request metrics per export, counted on the data path by `VolumeExport` (a few atomic
/// increments and one histogram record per request), and state — pool space, backend I/O, volumes,
/// jobs, connections, mirrors, backups — read from the services when a scrape comes, so the data path
/// pays nothing for it. Every series goes through the registry: one text format, one label escaping.
/// One registry per daemon, not the process-global `MetricsSystem`: tests run several daemons' worth of
/// servers in one process.
final class DaemonMetrics: Sendable {
    let registry = PrometheusCollectorRegistry()
    private let exports = Mutex<[String: ExportMetrics]>([:])
    /// Series with a volume, job, mirror or backup label, by what they describe ("volume:NAME", ...), so
    /// that a deleted volume, a forgotten job, a removed mirror or an old backup stops being reported.
    private let labelled = Mutex<[String: [LabelledSeries]]>([:])
    /// What the services' cumulative totals stood at when last added to a Prometheus counter, by
    /// "OWNER|METRIC" (OWNER as in `labelled`, or a fixed name for pool-wide totals).
    private let reportedTotals = Mutex<[String: UInt64]>([:])

    enum LabelledSeries: Sendable {
        case gauge(Gauge)
        case counter(Counter)
    }

    /// The series of one scrape that can go away, collected while rendering.
    struct Scrape {
        var series: [String: [LabelledSeries]] = [:]
    }

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
    func render(
        pool: PoolStatusDTO, volumes: [VolumeDTO], jobs: [JobDTO], connections: Int, mirrors: [MirrorInfo],
        backups: (recent: [BackupMetricSample], finished: [String: Int])?
    ) -> String {
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
            advance(registry.makeCounter(descriptor: backend, labels: [("kind", kind)]), key: "pool|backend_\(kind)", to: total)
        }
        if let mismatches = pool.checksumMismatches {
            let descriptor = Self.name(
                "pool", "checksum_mismatches", "total", "Data blocks read that did not match their checksum (each read failed)")
            // Made at zero so a scraper sees the series before the first mismatch.
            advance(registry.makeCounter(descriptor: descriptor), key: "pool|checksum_mismatches", to: mismatches)
        }
        if let immediate = pool.immediateWrites, let throttled = pool.immediateWritesThrottled {
            let descriptor = Self.name(
                "pool", "immediate_writes", "total",
                "Host writes done on the event loop (page-cache overwrites), and those the kernel throttled")
            for (kind, total) in [("done", immediate), ("throttled", throttled)] {
                advance(registry.makeCounter(descriptor: descriptor, labels: [("kind", kind)]), key: "pool|immediate_\(kind)", to: total)
            }
        }
        registry.makeGauge(descriptor: Self.name("nbd", "connections", nil, "Open NBD connections"))
            .set(Double(connections))

        var scrape = Scrape()
        let volumeBytes = Self.name("volume", "space", "bytes", "Volume size and the pool space it uses")
        let snapshots = Self.name("volume", "snapshots", nil, "Snapshots of the volume")
        for volume in volumes {
            let owner = "volume:" + volume.name
            gauge(volumeBytes, [("volume", volume.name), ("kind", "size")], owner, &scrape).set(Double(volume.size))
            gauge(volumeBytes, [("volume", volume.name), ("kind", "allocated")], owner, &scrape)
                .set(Double(volume.allocatedBytes))
            gauge(snapshots, [("volume", volume.name)], owner, &scrape).set(Double(volume.snapshotCount))
        }
        let progress = Self.name("job", "progress", "ratio", "Done / total of a running job (0 to 1)")
        let running = Self.name("jobs", "running", nil, "Jobs running, by kind")
        var runningByKind: [String: Int] = [:]
        for job in jobs where job.state == "running" {
            runningByKind[job.kind, default: 0] += 1
            gauge(progress, [("job", "\(job.id)"), ("kind", job.kind), ("target", job.target)], "job:\(job.id)", &scrape)
                .set(job.total > 0 ? Double(job.done) / Double(job.total) : 0)
        }
        for kind in Set(runningByKind.keys).union(["dedup", "reclaim"]) {
            registry.makeGauge(descriptor: running, labels: [("kind", kind)]).set(Double(runningByKind[kind] ?? 0))
        }
        renderMirrors(mirrors, &scrape)
        if let backups { renderBackups(backups.recent, finished: backups.finished, &scrape) }
        forget(seriesOtherThan: scrape)
        forgetExports(ofVolumesOtherThan: Set(volumes.map(\.name)))
        return registry.emitToString()
    }

    /// The gauge of `descriptor` and `labels`, kept while `owner` is in every scrape.
    func gauge(
        _ descriptor: MetricNameDescriptor, _ labels: [(String, String)], _ owner: String, _ scrape: inout Scrape
    ) -> Gauge {
        let gauge = registry.makeGauge(descriptor: descriptor, labels: labels)
        scrape.series[owner, default: []].append(.gauge(gauge))
        return gauge
    }

    /// The counter of `descriptor` and `labels`, kept while `owner` is in every scrape, brought up to a
    /// service's cumulative `total`.
    func counter(
        _ descriptor: MetricNameDescriptor, _ labels: [(String, String)], _ owner: String, total: UInt64,
        _ scrape: inout Scrape
    ) {
        let counter = registry.makeCounter(descriptor: descriptor, labels: labels)
        scrape.series[owner, default: []].append(.counter(counter))
        advance(counter, key: owner + "|" + descriptor.name, to: total)
    }

    /// Adds to `counter` what a cumulative total grew by since the last scrape. A total below the last
    /// one belongs to a new object of the same name (a mirror set up again): all of it is new.
    func advance(_ counter: Counter, key: String, to total: UInt64) {
        let delta = reportedTotals.withLock { reported -> UInt64 in
            let last = reported[key] ?? 0
            reported[key] = total
            return total >= last ? total - last : total
        }
        // Incremented by zero too: a counter exists (and is reported) from its first scrape.
        counter.increment(by: Int64(clamping: delta))
    }

    /// Unregisters the series of owners this scrape no longer saw, and forgets their totals.
    private func forget(seriesOtherThan scrape: Scrape) {
        let gone = labelled.withLock { previous -> [String: [LabelledSeries]] in
            let gone = previous.filter { scrape.series[$0.key] == nil }
            previous = scrape.series
            return gone
        }
        guard !gone.isEmpty else { return }
        reportedTotals.withLock { reported in
            reported = reported.filter { key, _ in !gone.keys.contains { key.hasPrefix($0 + "|") } }
        }
        for series in gone.values.joined() {
            switch series {
            case .gauge(let gauge): registry.unregisterGauge(gauge)
            case .counter(let counter): registry.unregisterCounter(counter)
            }
        }
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
