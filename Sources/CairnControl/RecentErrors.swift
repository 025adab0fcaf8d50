import Foundation
import Logging
import Synchronization

/// The last warnings and errors the daemon logged, for the status page: an operator glancing at it
/// should see that something went wrong without reading the journal. Bounded; oldest dropped first.
public final class RecentErrors: Sendable {
    /// Enough to show a burst in context, small enough to render on every refresh.
    public static let capacity = 50

    public struct Entry: Sendable, Hashable {
        public var time: Date
        public var level: Logger.Level
        public var message: String
        /// `key=value` pairs, sorted, as the log line has them.
        public var metadata: String
    }

    private let entries = Mutex<[Entry]>([])

    public init() {}

    func record(_ entry: Entry) {
        entries.withLock { list in
            list.append(entry)
            if list.count > Self.capacity { list.removeFirst(list.count - Self.capacity) }
        }
    }

    /// Newest first.
    public func list() -> [Entry] { entries.withLock { $0.reversed() } }
}

/// A log handler that keeps warning-and-above lines in `RecentErrors`; combine it with the stream
/// handler through `MultiplexLogHandler`.
public struct RecentErrorsLogHandler: LogHandler {
    let recent: RecentErrors
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?
    /// Only warnings and worse are kept, whatever level the daemon logs at.
    public var logLevel: Logger.Level = .warning

    public init(recent: RecentErrors, metadataProvider: Logger.MetadataProvider? = nil) {
        self.recent = recent
        self.metadataProvider = metadataProvider
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var merged = metadata
        if let provided = metadataProvider?.get() { merged.merge(provided) { _, new in new } }
        if let explicit = event.metadata { merged.merge(explicit) { _, new in new } }
        let text = merged.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        recent.record(RecentErrors.Entry(time: Date(), level: event.level, message: "\(event.message)", metadata: text))
    }
}
