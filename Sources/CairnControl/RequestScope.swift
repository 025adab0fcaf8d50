import Logging

/// The management API request a piece of work belongs to, so that everything logged on its behalf (by
/// the daemon and the engine, on whatever thread) carries `request=<id>`. The id is Hummingbird's
/// request id, the one its own log lines carry as `hb.request.id`.
public enum RequestScope {
    /// The request being served; nil outside one.
    @TaskLocal public static var requestID: String?

    /// Adds `request` to every log line written inside a request's scope. Install it with
    /// `LoggingSystem.bootstrap(_:metadataProvider:)`.
    public static let metadataProvider = Logger.MetadataProvider {
        guard let id = requestID else { return [:] }
        return ["request": "\(id)"]
    }

    /// Runs `work` (typically on another thread) inside the scope of `requestID`.
    public static func run<T>(in requestID: String?, _ work: () throws -> T) rethrows -> T {
        try $requestID.withValue(requestID, operation: work)
    }
}
