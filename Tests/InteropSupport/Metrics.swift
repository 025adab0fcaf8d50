import Foundation

/// `/metrics` text that Prometheus' own linter (`promtool check metrics`) refused.
public struct MetricsLintError: Error, CustomStringConvertible {
    public var description: String
}

extension TestDaemon {
    /// One scrape of `GET /metrics` as Prometheus makes it, checked by `promtool check metrics` (Debian's
    /// `prometheus` package): every test that reads metrics also proves the exposition is valid.
    public func scrapeMetrics() async throws -> String {
        let scraped = try await runTool(
            "/usr/bin/curl", ["-sS", "--fail", "--unix-socket", dataDirectory + "/cairn.sock", "http://cairn/metrics"])
        guard scraped.status == 0 else { throw MetricsLintError(description: "GET /metrics failed: \(scraped)") }
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("metrics-\(UUID().uuidString).txt").path
        try scraped.stdout.write(toFile: file, atomically: false, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: file) }
        let lint = try await runTool("/bin/sh", ["-c", "exec \(Tools.promtool) check metrics < \"$1\"", "sh", file])
        guard lint.status == 0 else {
            throw MetricsLintError(description: "promtool check metrics refused the exposition: \(lint)\n--- metrics\n\(scraped.stdout)")
        }
        return scraped.stdout
    }
}

/// Samples of a Prometheus text exposition.
public enum MetricsText {
    /// Every sample, keyed by the metric name and its sorted labels, e.g.
    /// `cairn_nbd_requests_total{command="write",export="m"}`; nil if a line is not a sample.
    public static func samples(_ text: String) -> [String: Double]? {
        var samples: [String: Double] = [:]
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else {
                return nil
            }
            samples[canonical(String(line[..<space]))] = value
        }
        return samples
    }

    /// The value of the series `name{labels…}` whose labels include every `containing` pair.
    public static func sample(_ text: String, _ name: String, _ containing: [String]) -> Double? {
        for line in text.split(separator: "\n") where line.hasPrefix(name + "{") {
            let parts = line.split(separator: " ")
            guard parts.count == 2, containing.allSatisfy({ parts[0].contains($0) }) else { continue }
            return Double(parts[1])
        }
        return nil
    }

    /// `name{b="2",a="1"}` → `name{a="1",b="2"}`, so a test does not depend on the label order emitted.
    public static func canonical(_ series: String) -> String {
        guard let brace = series.firstIndex(of: "{"), series.hasSuffix("}") else { return series }
        let labels = series[series.index(after: brace)..<series.index(before: series.endIndex)]
            .split(separator: ",").map(String.init).sorted()
        return String(series[..<brace]) + "{" + labels.joined(separator: ",") + "}"
    }
}
