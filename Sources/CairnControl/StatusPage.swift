import CairnAPI
import Foundation
import Logging

/// The daemon's read-only status page (GET /status): pool usage, volumes with their snapshot trees and
/// clones, clone groups, jobs with progress, recent errors. Plain HTML rendered on the server, no
/// script: it refreshes itself with a meta refresh, works in any browser and in a text dump, and
/// cannot act on anything.
public enum StatusPage {
    /// Seconds between refreshes: a job's progress moves visibly, the daemon barely notices (one page
    /// is a handful of in-memory lookups).
    public static let refreshSeconds = 5
    /// Finished jobs shown under the running ones.
    static let finishedJobsShown = 10

    public static func render(_ report: StatusReport, hostName: String = ProcessInfo.processInfo.hostName) -> String {
        var html = """
            <!DOCTYPE html>
            <html lang="en"><head><meta charset="utf-8">
            <meta http-equiv="refresh" content="\(refreshSeconds)">
            <meta name="viewport" content="width=device-width, initial-scale=1">
            <title>Cairn — \(escape(hostName))</title>
            <style>\(style)</style></head><body>
            <header><h1>Cairn</h1><span class="host">\(escape(hostName))</span>
            <span class="meta">pool \(escape(report.pool.dataDirectory)) · NBD \(escape(report.pool.nbdAddress ?? "-")) ·
            updated <time id="generated">\(timestamp(report.generatedAt))</time> · refreshes every \(refreshSeconds) s</span>
            </header><main>

            """
        html += poolSection(report.pool)
        html += volumeSection(report)
        html += sessionSection(report.pool)
        html += cloneSection(report.clones)
        html += mirrorSection(report.mirrors, targets: report.mirrorTargets)
        html += backupSection(report.backups)
        html += jobSection(report.jobs)
        html += errorSection(report.errors)
        html += "</main></body></html>\n"
        return html
    }

    static func poolSection(_ pool: PoolStatusDTO) -> String {
        let capacity = pool.usedBytes + (pool.filesystemAvailableBytes ?? 0)
        let percent = capacity > 0 ? Double(pool.usedBytes) / Double(capacity) * 100 : 0
        var html = "<section id=\"pool\"><h2>Pool</h2>"
        if let failure = pool.failure {
            html += "<p class=\"alert\" id=\"pool-health\">Health: \(escape(pool.health)). Writes stopped: \(escape(failure))</p>"
        }
        html += """
            <div class="bar" title="used of used + free"><div style="width:\(String(format: "%.1f", percent))%"></div></div>
            <dl class="figures">
            <div><dt>used</dt><dd id="pool-used">\(ByteSize.format(pool.usedBytes))</dd></div>
            <div><dt>free on filesystem</dt><dd>\(pool.filesystemAvailableBytes.map(ByteSize.format) ?? "-")</dd></div>
            <div><dt>provisioned</dt><dd>\(ByteSize.format(pool.provisionedBytes))</dd></div>
            <div><dt>shared</dt><dd>\(ByteSize.format(pool.sharedBytes))</dd></div>
            <div><dt>reclaimable</dt><dd>\(ByteSize.format(pool.pendingFreeBytes))</dd></div>
            <div><dt>volumes</dt><dd>\(pool.volumeCount)</dd></div>
            <div><dt>copy method</dt><dd>\(escape(pool.copyMethod))</dd></div>
            </dl></section>

            """
        return html
    }

    /// NBD connections and iSCSI sessions open now (from the pool status).
    static func sessionSection(_ pool: PoolStatusDTO) -> String {
        guard let connections = pool.nbdConnections else { return "" }
        var html = "<section id=\"sessions\"><h2>Sessions</h2><p>NBD \(escape(pool.nbdAddress ?? "-")): "
        html += "<span id=\"nbd-connections\">\(connections)</span> connection\(connections == 1 ? "" : "s")"
        guard let address = pool.iscsiAddress, let sessions = pool.iscsiSessions else {
            return html + " · iSCSI off</p></section>\n"
        }
        html += " · iSCSI \(escape(address)): <span id=\"iscsi-sessions\">\(sessions.count)</span> session"
        html += sessions.count == 1 ? "</p>" : "s</p>"
        guard !sessions.isEmpty else { return html + "</section>\n" }
        html += "<table><thead><tr><th>#</th><th>initiator</th><th>CHAP name</th><th>target</th><th>from</th>"
        html += "</tr></thead><tbody>"
        for session in sessions {
            html += "<tr data-iscsi-session=\"\(session.id)\"><td>\(session.id)</td><td>\(escape(session.initiator))</td>"
            html += "<td>\(escape(session.chapName ?? "-"))</td><td>\(escape(session.target ?? "(discovery)"))</td>"
            html += "<td>\(escape(session.remoteAddress))</td></tr>"
        }
        return html + "</tbody></table></section>\n"
    }

    static func volumeSection(_ report: StatusReport) -> String {
        var html = "<section id=\"volumes\"><h2>Volumes</h2>"
        let forest = report.volumeForest()
        if forest.isEmpty { return html + "<p class=\"none\">No volumes.</p></section>\n" }
        html += "<ul class=\"tree\">"
        for node in forest { html += volumeItem(node, clones: report.clones) }
        return html + "</ul></section>\n"
    }

    static func volumeItem(_ node: StatusReport.VolumeNode, clones: [CloneDTO]) -> String {
        let v = node.volume
        let sessions = v.attachments == 1 ? "1 session" : "\(v.attachments) sessions"
        // A clone-group member says so where it is listed as a volume of its own.
        let member = clones.first { $0.name == v.name }.map { ", clone of \(escape($0.source))" } ?? ""
        var html = """
            <li class="volume" data-volume="\(escape(v.name))"><span class="name">\(escape(v.name))</span>
            <span class="detail">\(ByteSize.format(v.size)), \(ByteSize.format(v.allocatedBytes)) allocated, \
            \(sessions)\(member)</span>
            """
        let groupClones = clones.filter { $0.source == v.name }
        if !node.snapshots.isEmpty || !groupClones.isEmpty { html += "<ul>" }
        for (snapshot, children) in node.snapshots {
            html += """
                <li class="snapshot" data-snapshot="\(escape(v.name))@\(escape(snapshot.name))">\
                <span class="name">@\(escape(snapshot.name))</span> <span class="detail">\(escape(snapshot.createdAt))\
                \(snapshot.attachments > 0 ? ", \(snapshot.attachments) readers" : "")</span>
                """
            if !children.isEmpty {
                html += "<ul>" + children.map { volumeItem($0, clones: clones) }.joined() + "</ul>"
            }
            html += "</li>"
        }
        for clone in groupClones {
            html += """
                <li class="clone" data-clone="\(escape(clone.name))"><span class="kind">clone</span> \
                <span class="name">\(escape(clone.name))</span> \
                <span class="state state-\(escape(clone.state))">\(escape(clone.state))</span></li>
                """
        }
        if !node.snapshots.isEmpty || !groupClones.isEmpty { html += "</ul>" }
        return html + "</li>\n"
    }

    static func cloneSection(_ clones: [CloneDTO]) -> String {
        guard !clones.isEmpty else { return "" }
        var html = """
            <section id="clones"><h2>Clone groups</h2><table><thead><tr><th>clone</th><th>source</th><th>state</th>\
            <th>differs in</th><th>job</th></tr></thead><tbody>
            """
        for clone in clones {
            let differs = ByteSize.format(clone.deltaExtents * clone.extentSize)
            let job = clone.job.map { "#\($0.id) \(escape($0.kind)) \(escape($0.state)) \(progressText($0))" } ?? "-"
            html += """
                <tr><td>\(escape(clone.name))</td><td>\(escape(clone.source))</td>\
                <td><span class="state state-\(escape(clone.state))">\(escape(clone.state))</span></td>\
                <td>\(differs) (\(clone.deltaExtents) extents)</td><td>\(job)</td></tr>
                """
        }
        return html + "</tbody></table></section>\n"
    }

    static func mirrorSection(_ mirrors: [MirrorDTO], targets: [MirrorTargetPairingDTO]) -> String {
        guard !mirrors.isEmpty || !targets.isEmpty else { return "" }
        var html = "<section id=\"mirrors\"><h2>Remote mirrors</h2>"
        if !mirrors.isEmpty {
            html += """
                <table><thead><tr><th>volume</th><th>target</th><th>state</th><th>to resync</th><th>lag</th>\
                <th>link</th><th>last error</th></tr></thead><tbody>
                """
            for mirror in mirrors {
                let mode = mirror.mode.map { $0 == "synchronous" ? "" : " (\(escape($0)))" } ?? ""
                let progress = mirror.job.map { " · " + progressText($0) } ?? ""
                html += """
                    <tr data-mirror="\(escape(mirror.volume))"><td>\(escape(mirror.volume))</td>\
                    <td>\(escape(mirror.target))</td><td><span class="state state-\(escape(mirror.state))">\
                    \(escape(mirror.state))</span>\(mode)</td>\
                    <td>\(ByteSize.format(mirror.dirtyExtents * mirror.extentSize))\(progress)</td>\
                    <td>\(ByteSize.format(mirror.lagBytes))</td><td>\(mirror.connected ? "connected" : "down")</td>\
                    <td>\(escape(mirror.lastError ?? ""))</td></tr>
                    """
            }
            html += "</tbody></table>"
        }
        if !targets.isEmpty {
            html += "<table><thead><tr><th>target volume</th><th>primary</th><th>state</th></tr></thead><tbody>"
            for target in targets {
                html += """
                    <tr data-mirror-target="\(escape(target.volume))"><td>\(escape(target.volume))</td>\
                    <td>\(escape(target.primaryNode))</td><td>\(escape(target.state))\
                    \(target.readOnly ? ", read-only to hosts" : "")\(target.modified ? ", changed here" : "")</td></tr>
                    """
            }
            html += "</tbody></table>"
        }
        return html + "</section>\n"
    }

    /// Finished backups shown under the running ones.
    static let finishedBackupsShown = 5

    static func backupSection(_ backups: [BackupDTO]) -> String {
        let running = backups.filter { $0.finishedAt == nil }
        let finished = backups.filter { $0.finishedAt != nil }.sorted { $0.startedAt > $1.startedAt }
            .prefix(finishedBackupsShown)
        guard !running.isEmpty || !finished.isEmpty else { return "" }
        var html = """
            <section id="backups"><h2>Backups</h2><table><thead><tr><th>backup</th><th>volume</th><th>method</th>\
            <th>phase</th><th>sessions still on the old image</th><th>archive</th></tr></thead><tbody>
            """
        for backup in running + finished {
            let sessions = backup.sessionsOnA.map { "#\($0.id) \(escape($0.address))" }.joined(separator: ", ")
            let progress = backup.job.map { " · " + progressText($0) } ?? ""
            html += """
                <tr data-backup="\(escape(backup.id))"><td>\(escape(backup.id))</td><td>\(escape(backup.volume))</td>\
                <td>\(escape(backup.method))</td><td><span class="state state-\(escape(backup.phase))">\
                \(escape(backup.phase))</span>\(escape(backup.drain.map { " (\($0))" } ?? ""))\(progress)</td>\
                <td>\(sessions.isEmpty ? "-" : sessions)</td><td>\(escape(backup.archive))</td></tr>
                """
        }
        return html + "</tbody></table></section>\n"
    }

    static func jobSection(_ jobs: [JobDTO]) -> String {
        let running = jobs.filter { $0.state == "running" }
        let finished = jobs.filter { $0.state != "running" }.sorted { $0.id > $1.id }.prefix(finishedJobsShown)
        var html = "<section id=\"jobs\"><h2>Jobs</h2>"
        if running.isEmpty { html += "<p class=\"none\">No job running.</p>" }
        for job in running {
            let percent = job.total > 0 ? min(100, Double(job.done) / Double(job.total) * 100) : 0
            html += """
                <div class="job" data-job="\(job.id)"><div class="job-title">#\(job.id) \(escape(job.kind)) \
                \(escape(job.target))</div><div class="bar"><div style="width:\(String(format: "%.1f", percent))%">\
                </div></div><div class="detail">\(progressText(job))</div></div>
                """
        }
        if !finished.isEmpty {
            html += "<table class=\"finished\"><thead><tr><th>job</th><th>target</th><th>state</th><th>ended</th>"
            html += "<th>outcome</th></tr></thead><tbody>"
            for job in finished {
                html += """
                    <tr><td>#\(job.id) \(escape(job.kind))</td><td>\(escape(job.target))</td>\
                    <td><span class="state state-\(escape(job.state))">\(escape(job.state))</span></td>\
                    <td>\(escape(job.finishedAt ?? "-"))</td><td>\(escape(job.message ?? ""))</td></tr>
                    """
            }
            html += "</tbody></table>"
        }
        return html + "</section>\n"
    }

    static func errorSection(_ errors: [RecentErrors.Entry]) -> String {
        var html = "<section id=\"errors\"><h2>Recent errors</h2>"
        if errors.isEmpty { return html + "<p class=\"none\">No warnings or errors since the daemon started.</p></section>\n" }
        html += "<table><tbody>"
        for entry in errors {
            html += """
                <tr class="level-\(entry.level.rawValue)"><td>\(timestamp(entry.time))</td><td>\(entry.level.rawValue)</td>\
                <td>\(escape(entry.message))</td><td class="detail">\(escape(entry.metadata))</td></tr>
                """
        }
        return html + "</tbody></table></section>\n"
    }

    /// "42% (420 MiB of 1 GiB), 80 MiB/s, ETA 7 s".
    static func progressText(_ job: JobDTO) -> String { escape(job.progressSummary) }

    static func timestamp(_ date: Date) -> String {
        date.formatted(.iso8601.year().month().day().time(includingFractionalSeconds: false))
    }

    /// HTML text and attribute escaping: names are validated, but messages and metadata are free text.
    static func escape(_ text: String) -> String {
        var out = ""
        out.reserveCapacity(text.utf8.count)
        for character in text {
            switch character {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            default: out.append(character)
            }
        }
        return out
    }

    static let style = """
        body{font:14px/1.45 system-ui,sans-serif;margin:0;background:#f4f5f7;color:#1d2430}
        header{background:#1d2430;color:#fff;padding:12px 24px;display:flex;gap:16px;align-items:baseline;flex-wrap:wrap}
        header h1{margin:0;font-size:20px}.host{font-weight:600}.meta{color:#b8c0cc;font-size:12px}
        main{display:grid;grid-template-columns:repeat(auto-fit,minmax(420px,1fr));gap:16px;padding:16px 24px}
        section{background:#fff;border-radius:6px;padding:12px 16px;box-shadow:0 1px 2px rgba(0,0,0,.08)}
        section#errors,section#clones,section#mirrors,section#backups{grid-column:1/-1}
        h2{font-size:15px;margin:0 0 8px}
        .bar{height:10px;background:#e3e6eb;border-radius:5px;overflow:hidden;margin:6px 0}
        .bar>div{height:100%;background:#2f7de1}
        .figures{display:grid;grid-template-columns:repeat(auto-fill,minmax(120px,1fr));gap:6px;margin:8px 0 0}
        .figures dt{color:#687385;font-size:12px}.figures dd{margin:0;font-weight:600}
        ul.tree,ul.tree ul{list-style:none;padding-left:18px;margin:2px 0}ul.tree{padding-left:0}
        .name{font-weight:600}.detail{color:#687385;font-size:12px}.none{color:#687385}
        .snapshot>.name{color:#7b4bc4}.clone>.name{color:#1f8a5b}
        .kind{font-size:11px;text-transform:uppercase;color:#1f8a5b;border:1px solid #1f8a5b;border-radius:3px;padding:0 3px}
        .state{padding:1px 6px;border-radius:8px;font-size:12px;background:#e3e6eb}
        .state-running,.state-synchronizing,.state-restoring,.state-reverse-syncing{background:#dbe9fb}
        .state-synchronized,.state-succeeded,.state-mirrored{background:#d9f2e4}
        .state-fractured,.state-severed{background:#fdf0d5}
        .state-failed{background:#fbdada}.state-cancelled{background:#eee}
        table{border-collapse:collapse;width:100%;font-size:13px}
        th,td{text-align:left;padding:4px 6px;border-bottom:1px solid #eceef1;vertical-align:top}
        .job{margin:8px 0}.job-title{font-weight:600}
        .alert{background:#fbdada;padding:6px 10px;border-radius:4px}
        tr.level-error td,tr.level-critical td{color:#a61b1b}tr.level-warning td{color:#8a5a00}
        """
}
