import Crypto
import Foundation
import MirrorProtocol

/// The shared secret both daemons of a mirror hold (`--replication-secret-file`). It never crosses the
/// link: the target sends a random nonce and the primary answers HMAC-SHA256(secret, nonce), so a host
/// without the secret cannot write to a target, and a recorded proof is useless for another connection.
/// The primary sends a nonce of its own in the same hello and the target answers with
/// HMAC-SHA256(secret, label ‖ primary nonce ‖ target nonce), so a host posing as the target is refused
/// too. The label keeps the two proofs apart: a fake target cannot reflect the primary's nonce back as
/// its challenge and use the primary's answer as its own proof.
public struct ReplicationSecret: Sendable {
    /// The secret's bytes (SymmetricKey is not Sendable; a key is made per use, which is rare: once per connection).
    let bytes: [UInt8]
    var key: SymmetricKey { SymmetricKey(data: bytes) }

    /// Fewer bytes than this would be guessable: 16 bytes is 128 bits of entropy.
    public static let minimumLength = 16

    public init(bytes: [UInt8]) throws {
        guard bytes.count >= Self.minimumLength else {
            throw ReplicationError(
                .invalidArgument,
                "the replication secret must be at least \(Self.minimumLength) bytes (e.g. `head -c 32 /dev/urandom | base64 > FILE`)")
        }
        self.bytes = bytes
    }

    /// Reads the secret from a file; surrounding whitespace (a trailing newline) is not part of it.
    public static func load(path: String) throws -> ReplicationSecret {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ReplicationError(.invalidArgument, "cannot read the replication secret file \(path)")
        }
        let text = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        return try ReplicationSecret(bytes: Array(text.utf8))
    }

    func proof(for nonce: [UInt8]) -> [UInt8] {
        Array(HMAC<SHA256>.authenticationCode(for: nonce, using: key))
    }

    /// Domain label of the target's proof.
    static let targetProofLabel = Array("cairn-mirror-target-proof".utf8)

    /// The target's answer to the primary's nonce (bound to the target's own challenge too).
    func targetProof(primaryNonce: [UInt8], targetNonce: [UInt8]) -> [UInt8] {
        Array(HMAC<SHA256>.authenticationCode(for: Self.targetProofLabel + primaryNonce + targetNonce, using: key))
    }

    /// Constant-time check of the target's proof.
    func verifyTarget(_ proof: [UInt8], primaryNonce: [UInt8], targetNonce: [UInt8]) -> Bool {
        HMAC<SHA256>.isValidAuthenticationCode(
            proof, authenticating: Self.targetProofLabel + primaryNonce + targetNonce, using: key)
    }

    /// Constant-time check of a proof.
    func verify(_ proof: [UInt8], nonce: [UInt8]) -> Bool {
        HMAC<SHA256>.isValidAuthenticationCode(proof, authenticating: nonce, using: key)
    }

    static func nonce() -> [UInt8] {
        var generator = SystemRandomNumberGenerator()
        return (0..<MirrorLimits.nonceLength).map { _ in UInt8.random(in: 0...255, using: &generator) }
    }
}
