import CRados
import Glibc

/// One holder of an advisory lock on an object (cls_lock), as the OSD lists it.
public struct RadosLocker: Sendable, Equatable {
    /// "client.4123": the holder's global id.
    public var client: String
    /// The holder's own name for this hold.
    public var cookie: String
    /// The holder's address ("127.0.0.1:0/1234"): what a blocklist entry names.
    public var address: String
}

extension RadosIOContext {
    /// Takes (or, with `renew`, extends) an exclusive lock on `oid` that expires after `seconds` unless
    /// renewed. EBUSY: someone else holds it; EBLOCKLISTED: this client has been fenced.
    public func lockExclusive(
        _ oid: String, name: String, cookie: String, description: String, seconds: Int, renew: Bool
    ) throws {
        var duration = timeval(tv_sec: seconds, tv_usec: 0)
        let flags = renew ? UInt8(LIBRADOS_LOCK_FLAG_MUST_RENEW) : 0
        try check(
            rados_lock_exclusive(handle, oid, name, cookie, description, &duration, flags), "lock \(name)", oid)
    }

    /// Releases the lock this client holds under `cookie` (ENOENT when it holds none).
    public func unlock(_ oid: String, name: String, cookie: String) throws {
        try check(rados_unlock(handle, oid, name, cookie), "unlock \(name)", oid)
    }

    /// Removes another client's hold on the lock (after fencing it).
    public func breakLock(_ oid: String, name: String, locker: RadosLocker) throws {
        let result = rados_break_lock(handle, oid, name, locker.client, locker.cookie)
        if result != -ENOENT { try check(result, "break lock \(name)", oid) }
    }

    /// The current, unexpired holders of lock `name` on `oid` (the OSD drops expired ones).
    public func lockers(_ oid: String, name: String) throws -> [RadosLocker] {
        var capacity = 1024
        while true {
            var exclusive: Int32 = 0
            var tag = [CChar](repeating: 0, count: capacity)
            var clients = [CChar](repeating: 0, count: capacity)
            var cookies = [CChar](repeating: 0, count: capacity)
            var addresses = [CChar](repeating: 0, count: capacity)
            var tagLength = capacity
            var clientsLength = capacity
            var cookiesLength = capacity
            var addressesLength = capacity
            let count = Int32(
                truncatingIfNeeded: rados_list_lockers(
                    handle, oid, name, &exclusive, &tag, &tagLength, &clients, &clientsLength, &cookies,
                    &cookiesLength, &addresses, &addressesLength))
            if count == -ERANGE {
                capacity = max(tagLength, clientsLength, cookiesLength, addressesLength, capacity * 2)
                continue
            }
            if count == -ENOENT { return [] }
            try check(count, "list lockers \(name)", oid)
            let clientList = Self.strings(clients, count: Int(count))
            let cookieList = Self.strings(cookies, count: Int(count))
            let addressList = Self.strings(addresses, count: Int(count))
            return (0..<Int(count)).map {
                RadosLocker(
                    client: clientList[$0], cookie: cookieList[$0],
                    address: RadosCluster.plainAddress(addressList[$0]))
            }
        }
    }

    /// Splits `count` NUL-terminated strings packed one after another.
    private static func strings(_ buffer: [CChar], count: Int) -> [String] {
        var result: [String] = []
        var start = 0
        while result.count < count, start < buffer.count {
            let end = buffer[start...].firstIndex(of: 0) ?? buffer.count
            result.append(String(decoding: buffer[start..<end].map { UInt8(bitPattern: $0) }, as: UTF8.self))
            start = end + 1
        }
        while result.count < count { result.append("") }
        return result
    }
}
