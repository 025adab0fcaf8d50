import CairnEngine
import CairnIO
import Foundation

/// The management API's bearer token for TCP listeners: read from a file, or made once and kept in the
/// data directory (mode 0600) so that local tools with access to the pool can read it.
enum APIToken {
    /// Random bytes in a generated token (hex-encoded: 64 characters).
    static let generatedBytes = 32
    /// Shortest token accepted from a file: anything shorter is guessable.
    static let minimumLength = 16

    static func load(from path: String, createIfMissing: Bool) throws -> String {
        let existing: [UInt8]?
        do {
            existing = try PosixFileSystem().contents(of: path)
        } catch {
            throw EngineError(.ioFailure, "cannot read the API token file \(path): \(error)", cause: error)
        }
        if let existing {
            let token = String(decoding: existing, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            guard token.count >= minimumLength, token.allSatisfy({ $0.isASCII && !$0.isWhitespace }) else {
                throw EngineError(
                    .invalidArgument,
                    "the API token in \(path) must be at least \(minimumLength) printable ASCII characters")
            }
            return token
        }
        guard createIfMissing else {
            throw EngineError(.notFound, "cannot read the API token file \(path)")
        }
        var generator = SystemRandomNumberGenerator()
        let token = (0..<generatedBytes).map { _ in String(format: "%02x", UInt8.random(in: 0...255, using: &generator)) }
            .joined()
        // AtomicFile.create: made 0600 before the token is written (never readable by others), synced,
        // then linked in place with its directory synced; an existing file is never overwritten.
        do {
            try AtomicFile.create(path, with: Array((token + "\n").utf8))
        } catch {
            throw EngineError(.ioFailure, "cannot create the API token file \(path): \(error)", cause: error)
        }
        return token
    }
}
