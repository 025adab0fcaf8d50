import CairnAPI
import Foundation

/// What `cairn copy-and-write` measured, per operation.
struct CopyAndWriteReport: Codable, Sendable {
    var mode: String
    var source: UInt64
    var target: UInt64
    var chunkSize: UInt32
    var bufferOffset: UInt32
    var bufferBytes: Int
    var runs: Int
    /// Requests answered per operation: 1 offloaded, 3 host-side.
    var roundTrips: Int
    /// NBD bytes per operation: request headers and payloads out, replies and read data in.
    var bytesSent: Int
    var bytesReceived: Int
    var latency: LatencySummary

    func print() {
        Swift.print(
            "\(mode): chunk of \(ByteSize.format(UInt64(chunkSize))) at \(target) from \(source), "
                + "\(ByteSize.format(UInt64(bufferBytes))) buffer at +\(bufferOffset)")
        Output.fields([
            ("round trips", "\(roundTrips)"),
            ("bytes sent", "\(bytesSent)"),
            ("bytes received", "\(bytesReceived)"),
            ("latency", latency.text + (runs > 1 ? " (\(runs) runs)" : "")),
        ])
    }
}

/// Latency of repeated runs, in microseconds.
struct LatencySummary: Codable, Sendable {
    var minimumMicroseconds: Double
    var medianMicroseconds: Double
    var meanMicroseconds: Double
    var maximumMicroseconds: Double

    init(_ samples: [Duration]) {
        let micros = samples.map { Double($0.components.seconds) * 1e6 + Double($0.components.attoseconds) / 1e12 }
            .sorted()
        minimumMicroseconds = micros.first ?? 0
        maximumMicroseconds = micros.last ?? 0
        meanMicroseconds = micros.isEmpty ? 0 : micros.reduce(0, +) / Double(micros.count)
        let middle = micros.count / 2
        medianMicroseconds =
            micros.isEmpty ? 0 : micros.count % 2 == 1 ? micros[middle] : (micros[middle - 1] + micros[middle]) / 2
    }

    var text: String {
        func ms(_ value: Double) -> String { String(format: "%.3f ms", value / 1000) }
        return "median \(ms(medianMicroseconds)), min \(ms(minimumMicroseconds)), mean \(ms(meanMicroseconds))"
    }
}
