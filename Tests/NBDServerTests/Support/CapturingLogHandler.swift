import Logging
import Synchronization

/// Keeps log records in memory so tests can assert on what the server negotiated.
final class LogCapture: Sendable {
    struct Record: Sendable {
        var level: Logger.Level
        var message: String
        var metadata: [String: String]
    }

    private let storage = Mutex<[Record]>([])

    var records: [Record] { storage.withLock { $0 } }

    func append(_ record: Record) {
        storage.withLock { $0.append(record) }
    }

    func logger(level: Logger.Level = .debug) -> Logger {
        var logger = Logger(label: "nbd-test") { _ in CapturingLogHandler(capture: self) }
        logger.logLevel = level
        return logger
    }

    /// Metadata of the records with this message.
    func metadata(of message: String) -> [[String: String]] {
        records.filter { $0.message == message }.map(\.metadata)
    }
}

struct CapturingLogHandler: LogHandler {
    let capture: LogCapture
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .trace

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        let merged = metadata.merging(event.metadata ?? [:]) { $1 }
        capture.append(
            LogCapture.Record(
                level: event.level,
                message: "\(event.message)",
                metadata: merged.mapValues { "\($0)" }
            )
        )
    }
}
