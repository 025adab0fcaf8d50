import CairnAPI
import Foundation
import Logging
import Testing

@testable import CairnControl

/// The status page renderer without a daemon: escaping, the snapshot tree, the sections that appear only
/// when there is something to show.
@Suite("status page rendering")
struct StatusPageTests {
    static func pool() -> PoolStatusDTO {
        PoolStatusDTO(
            poolID: "p", dataDirectory: "/srv/<pool>", copyMethod: "reflink", volumeCount: 3, provisionedBytes: 3 << 30,
            usedBytes: 1 << 30, sharedBytes: 0, pendingFreeBytes: 0, fileBytes: 1 << 30,
            filesystemAvailableBytes: 9 << 30, failure: nil, nbdAddress: "127.0.0.1:10809")
    }

    static func volume(_ name: String, origin: String? = nil) -> VolumeDTO {
        VolumeDTO(
            name: name, size: 1 << 30, chunkSize: 65536, allocatedBytes: 0, snapshotCount: 0, attachments: 0,
            createdAt: "2026-11-26T00:00:00Z", origin: origin, exportURI: nil, preserveStore: nil)
    }

    static func snapshot(_ volume: String, _ name: String) -> SnapshotDTO {
        SnapshotDTO(
            volume: volume, name: name, size: 1 << 30, createdAt: "2026-11-26T00:00:00Z", attachments: 0, clones: [],
            exportURI: nil)
    }

    static func report(errors: [RecentErrors.Entry] = []) -> StatusReport {
        StatusReport(
            generatedAt: Date(timeIntervalSince1970: 0), pool: pool(),
            volumes: [volume("vm1"), volume("vm1-test", origin: "vm1@daily"), volume("orphan", origin: "gone@x")],
            snapshots: [snapshot("vm1", "daily")], clones: [], jobs: [], errors: errors)
    }

    @Test("free text is escaped: messages, metadata, paths; the page refreshes itself and runs no script")
    func escaping() {
        let entry = RecentErrors.Entry(
            time: Date(timeIntervalSince1970: 0), level: .error, message: "<script>alert('x')</script>",
            metadata: "error=\"a&b\"")
        let html = StatusPage.render(Self.report(errors: [entry]), hostName: "host<1>")
        #expect(!html.contains("<script>"))
        #expect(html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"))
        #expect(html.contains("error=&quot;a&amp;b&quot;"))
        #expect(html.contains("/srv/&lt;pool&gt;") && html.contains("host&lt;1&gt;"))
        #expect(html.contains(#"<meta http-equiv="refresh" content="\#(StatusPage.refreshSeconds)">"#))
    }

    @Test("a clone of a snapshot hangs under it; a clone whose snapshot is gone is a tree of its own")
    func snapshotTree() {
        let forest = Self.report().volumeForest()
        #expect(forest.map(\.volume.name) == ["vm1", "orphan"])
        let vm1 = forest[0]
        #expect(vm1.snapshots.map(\.snapshot.name) == ["daily"])
        #expect(vm1.snapshots[0].clones.map(\.volume.name) == ["vm1-test"])
    }

    @Test("sections without content are left out; errors say when there are none")
    func emptySections() {
        let html = StatusPage.render(Self.report(), hostName: "h")
        #expect(!html.contains(#"id="clones""#) && !html.contains(#"id="mirrors""#) && !html.contains(#"id="backups""#))
        #expect(html.contains("No warnings or errors since the daemon started."))
        #expect(html.contains("No job running."))
    }

    @Test("recent errors keep the newest, bounded")
    func recentErrorsBound() {
        let recent = RecentErrors()
        for i in 0..<(RecentErrors.capacity + 7) {
            recent.record(.init(time: Date(), level: .warning, message: "m\(i)", metadata: ""))
        }
        let list = recent.list()
        #expect(list.count == RecentErrors.capacity)
        #expect(list.first?.message == "m\(RecentErrors.capacity + 6)" && list.last?.message == "m7")
    }
}

/// The one progress line that the CLI prints and the status page shows.
@Suite("job progress line")
struct JobProgressSummaryTests {
    static func job(done: UInt64, total: UInt64, unit: String, rate: Double, eta: Double?) -> JobDTO {
        JobDTO(
            id: 7, kind: "restore", target: "vm1", state: "running", done: done, total: total, unit: unit,
            startedAt: "2026-11-26T00:00:00Z", finishedAt: nil, message: nil, rate: rate, etaSeconds: eta)
    }

    @Test("bytes in human units with percent and ETA; other units counted; no total, no percent")
    func summary() {
        #expect(Self.job(done: 1 << 30, total: 4 << 30, unit: "bytes", rate: 512 * 1024 * 1024, eta: 6).progressSummary
            == "25% (1 GiB of 4 GiB), 512 MiB/s, ETA 6 s")
        #expect(Self.job(done: 30, total: 40, unit: "extents", rate: 10, eta: nil).progressSummary
            == "75% (30 extents of 40 extents), 10 extents/s")
        #expect(Self.job(done: 1200, total: 0, unit: "extents", rate: 90, eta: nil).progressSummary
            == "1200 extents, 90 extents/s")
    }

    @Test("the status page escapes the unit, which is free text to it")
    func escaped() {
        let line = StatusPage.progressText(Self.job(done: 1, total: 2, unit: "<b>", rate: 1, eta: nil))
        #expect(line.contains("&lt;b&gt;") && !line.contains("<b>"))
    }
}
