import Foundation

/// Who serves a pool, as the header object's `owner` attribute records it: the librados clients a
/// successor must blocklist before it takes the lock. Empty addresses: the last owner left cleanly.
struct OwnerRecord: Codable, Equatable {
    var host: String
    var pid: Int32
    /// Client addresses ("127.0.0.1:0/1234") this owner reads and writes through.
    var addresses: [String]
    /// When it took the pool (seconds since 1970).
    var since: Double

    init(addresses: [String]) {
        host = ProcessInfo.processInfo.hostName
        pid = getpid()
        self.addresses = addresses
        since = Date().timeIntervalSince1970
    }

    static func read(_ io: RadosIOContext) throws -> OwnerRecord? {
        guard let text = try io.xattr(PoolOwnership.headerObject, PoolOwnership.ownerAttribute), !text.isEmpty else {
            return nil
        }
        do {
            return try JSONDecoder().decode(OwnerRecord.self, from: Data(text.utf8))
        } catch {
            throw RadosError("read the owner record", PoolOwnership.headerObject, result: -EINVAL)
        }
    }

    func write(_ io: RadosIOContext) throws {
        let text = String(decoding: try JSONEncoder().encode(self), as: UTF8.self)
        try io.setXattr(PoolOwnership.headerObject, PoolOwnership.ownerAttribute, text)
    }
}
