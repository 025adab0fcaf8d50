import Foundation
import InteropSupport
import Testing

/// `GET /metrics` scraped the way Prometheus does, before and after real client I/O.
@Suite("Prometheus metrics of cairn serve")
struct MetricsDaemonTests {
    /// One scrape (checked by promtool): every sample, keyed by the metric name and its sorted labels, e.g.
    /// `cairn_nbd_requests_total{command="write",export="m"}`.
    static func scrape(_ daemon: TestDaemon) async throws -> [String: Double] {
        let text = try await daemon.scrapeMetrics()
        return try #require(MetricsText.samples(text), "not a sample line in: \(text)")
    }

    @Test("request counters, bytes and latency move with a fio run; pool, volume and connection gauges are right")
    func metricsMoveWithIO() async throws {
        try await withDaemon { daemon in
            try await daemon.createVolume("m", "64M")
            let before = try await Self.scrape(daemon)
            #expect(before["cairn_volume_space_bytes{kind=\"size\",volume=\"m\"}"] == Double(64 << 20), "\(before)")
            #expect(before["cairn_nbd_connections"] == 0)

            let writes = 3000
            let fio = try await runTool(
                "/usr/bin/fio",
                [
                    "--name=w", "--ioengine=nbd", "--uri=\(daemon.uri("m"))", "--rw=randwrite", "--bs=4k",
                    "--iodepth=16", "--size=64M", "--number_ios=\(writes)", "--end_fsync=1",
                ])
            try #require(fio.status == 0, "\(fio)")
            let reads = try await runTool(
                "/usr/bin/fio",
                [
                    "--name=r", "--ioengine=nbd", "--uri=\(daemon.uri("m"))", "--rw=randread", "--bs=4k",
                    "--iodepth=16", "--size=64M", "--number_ios=1000",
                ])
            try #require(reads.status == 0, "\(reads)")
            let after = try await Self.scrape(daemon)
            func delta(_ series: String) -> Double { (after[series] ?? 0) - (before[series] ?? 0) }

            let written = delta("cairn_nbd_requests_total{command=\"write\",export=\"m\"}")
            #expect(written >= Double(writes), "\(after)")
            #expect(delta("cairn_nbd_data_bytes_total{direction=\"write\",export=\"m\"}") == written * 4096)
            #expect(delta("cairn_nbd_request_duration_seconds_count{command=\"write\",export=\"m\"}") == written)
            #expect(delta("cairn_nbd_requests_total{command=\"flush\",export=\"m\"}") >= 1)
            #expect(delta("cairn_nbd_requests_total{command=\"read\",export=\"m\"}") >= 1000)
            #expect(delta("cairn_nbd_data_bytes_total{direction=\"read\",export=\"m\"}") >= 1000 * 4096)
            #expect(delta("cairn_nbd_request_errors_total{command=\"write\",export=\"m\"}") == 0)
            // The engine wrote at least what the host wrote, and the volume now uses space.
            #expect(delta("cairn_pool_backend_bytes_total{kind=\"written\"}") >= written * 4096)
            #expect((after["cairn_pool_space_bytes{kind=\"used\"}"] ?? 0) > 0)
            // Later writes into chunks fio had already written were done on the event loop.
            #expect(delta("cairn_pool_immediate_writes_total{kind=\"done\"}") > 0, "\(after)")
            #expect(after["cairn_pool_immediate_writes_total{kind=\"throttled\"}"] != nil, "\(after)")
            #expect((after["cairn_volume_space_bytes{kind=\"allocated\",volume=\"m\"}"] ?? 0) > 0)

            // A client attached shows as a connection; a deleted volume disappears from the gauges.
            let holder = try HeldConnection(uri: daemon.uri("m"))
            defer { holder.close() }
            try await holder.waitUntilReady()
            #expect(try await Self.scrape(daemon)["cairn_nbd_connections"] == 1)
            holder.close()
            try await daemon.cliOK(["volume", "create", "gone", "1M"])
            let read = try await runTool("/usr/bin/nbdcopy", [daemon.uri("gone"), "null:"])
            try #require(read.status == 0, "\(read)")
            let served = try await Self.scrape(daemon)
            #expect(served["cairn_volume_space_bytes{kind=\"size\",volume=\"gone\"}"] == Double(1 << 20))
            // nbdcopy maps the empty volume (BLOCK_STATUS) rather than reading its holes.
            let requests = served.filter { $0.key.hasPrefix("cairn_nbd_requests_total{") && $0.key.contains("export=\"gone\"") }
            #expect(requests.values.reduce(0, +) >= 1, "\(served)")
            // Deleted: its gauges and its request series are gone; other exports' series stay.
            try await daemon.cliOK(["volume", "delete", "gone"])
            let afterDelete = try await Self.scrape(daemon)
            #expect(afterDelete["cairn_volume_space_bytes{kind=\"size\",volume=\"gone\"}"] == nil)
            #expect(!afterDelete.keys.contains { $0.contains("export=\"gone\"") }, "\(afterDelete.keys.sorted())")
            #expect(afterDelete["cairn_nbd_requests_total{command=\"read\",export=\"m\"}"] != nil)
        }
    }
}
