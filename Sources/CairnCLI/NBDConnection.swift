import ArgumentParser
import CairnAPI
import NBDClient
import NBDProtocol

/// A volume as the NBD commands take it: a Cairn volume name, looked up through the management API
/// (its NBD URI and chunk size), or an `nbd://HOST:PORT/EXPORT` URI used as is; for TLS an
/// `nbds://[USER@]HOST:PORT/EXPORT?tls-certificates=DIR` (or `?tls-psk-file=FILE`) URI, as libnbd takes.
struct NBDVolume: Sendable {
    var uri: String
    /// Known when the volume was looked up by name.
    var chunkSize: UInt32?

    static func resolve(_ argument: String, options: ClientOptions) async throws -> NBDVolume {
        if argument.hasPrefix("nbd://") || argument.hasPrefix("nbds://") { return NBDVolume(uri: argument) }
        let volume = try await options.client.get(APIPath.volume(argument), as: VolumeDTO.self)
        guard let uri = volume.exportURI else {
            throw CLIError(
                message: "the daemon did not report an NBD address for \(argument)", exitCode: ExitStatus.failure)
        }
        return NBDVolume(uri: uri, chunkSize: volume.chunkSize)
    }
}

/// Runs `body` with an NBD connection to `uri`, always disconnecting afterwards, and turns client errors
/// into `CLIError`s with the exit codes the API commands use.
func withNBDClient<T: Sendable>(
    _ uri: String,
    metaContexts: [String] = [],
    _ body: (NBDClient) async throws -> T
) async throws -> T {
    let client: NBDClient
    do {
        client = try await NBDClient.connect(to: NBDURI(parsing: uri), metaContexts: metaContexts)
    } catch let error as NBDClientError {
        throw CLIError(error, uri: uri)
    } catch {
        throw CLIError(message: "cannot connect to \(uri): \(error)", exitCode: ExitStatus.unavailable)
    }
    do {
        let result = try await body(client)
        await client.disconnect()
        return result
    } catch {
        await client.disconnect()
        if let error = error as? NBDClientError { throw CLIError(error, uri: uri) }
        throw error
    }
}

extension CLIError {
    /// The export did not select `x-cairn:copy-on-write`.
    static func copyOnWriteNotOffered(_ uri: String) -> CLIError {
        CLIError(
            message: "\(uri) does not offer \(NBDCopyOnWrite.contextName) (a snapshot, or not a Cairn volume)",
            exitCode: ExitStatus.failure)
    }

    init(_ error: NBDClientError, uri: String) {
        let code: Int32 =
            switch error {
            case .invalidURI, .invalidArgument: ExitStatus.usage
            case .negotiationFailed(let failure) where failure.reply == .errorUnknown: ExitStatus.notFound
            case .commandFailed(_, .invalid, _): ExitStatus.usage
            case .commandFailed(_, .noSpace, _): ExitStatus.noSpace
            case .commandFailed(_, .permissionDenied, _): ExitStatus.conflict
            case .connectionClosed: ExitStatus.unavailable
            default: ExitStatus.failure
            }
        self.init(message: "\(uri): \(error)", exitCode: code)
    }
}

/// Parses a byte value: "0xab", "171".
func parseByte(_ text: String) throws -> UInt8 {
    let value = text.lowercased().hasPrefix("0x") ? UInt8(text.dropFirst(2), radix: 16) : UInt8(text)
    guard let value else { throw ValidationError("'\(text)' is not a byte: use 0..255 or 0x00..0xff") }
    return value
}
