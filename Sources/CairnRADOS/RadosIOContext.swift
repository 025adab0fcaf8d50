import CRados
import Glibc

/// Objects of one pool (and namespace): synchronous calls for control objects, asynchronous ones
/// (`aio*`, returning a `RadosCompletion`) for the data path. librados copies a write's buffer before
/// an `aio*` call returns; a read's buffer must stay valid until its completion is waited for.
public final class RadosIOContext: @unchecked Sendable {
    let handle: rados_ioctx_t
    /// Keeps the client alive as long as the context is.
    public let cluster: RadosCluster
    public let pool: String
    public let namespace: String

    init(cluster: RadosCluster, pool: String, namespace: String) throws {
        var io: rados_ioctx_t?
        try check(rados_ioctx_create(cluster.handle, pool, &io), "open pool", pool)
        handle = io!
        self.cluster = cluster
        self.pool = pool
        self.namespace = namespace
        if !namespace.isEmpty { rados_ioctx_set_namespace(handle, namespace) }
    }

    deinit { rados_ioctx_destroy(handle) }

    // MARK: Asynchronous data path

    /// Writes `buffer` into object `oid` at `offset`, creating the object.
    public func aioWrite(_ oid: String, _ buffer: UnsafeRawBufferPointer, at offset: UInt64) throws -> RadosCompletion {
        let completion = try RadosCompletion("write", oid, io: self)
        try check(
            rados_aio_write(handle, oid, completion.handle, buffer.baseAddress?.assumingMemoryBound(to: CChar.self),
                buffer.count, offset), "write", oid)
        return completion
    }

    /// Reads into `buffer` from `offset`; the completion's result is the number of bytes the object
    /// held there (ENOENT when the object does not exist).
    public func aioRead(_ oid: String, into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws
        -> RadosCompletion
    {
        let completion = try RadosCompletion("read", oid, io: self)
        try check(
            rados_aio_read(handle, oid, completion.handle, buffer.baseAddress?.assumingMemoryBound(to: CChar.self),
                buffer.count, offset), "read", oid)
        return completion
    }

    /// Writes `pattern` repeatedly over `length` bytes at `offset` (one small message for a large fill).
    public func aioWriteSame(_ oid: String, pattern: UnsafeRawBufferPointer, length: Int, at offset: UInt64) throws
        -> RadosCompletion
    {
        let completion = try RadosCompletion("writesame", oid, io: self)
        try check(
            rados_aio_writesame(handle, oid, completion.handle, pattern.baseAddress?.assumingMemoryBound(to: CChar.self),
                pattern.count, length, offset), "writesame", oid)
        return completion
    }

    /// Makes `length` bytes at `offset` read as zeros, deallocating them where the OSD's store can.
    /// A missing object stays missing (it already reads as zeros).
    public func aioZero(_ oid: String, at offset: UInt64, length: UInt64) throws -> RadosCompletion {
        let completion = try RadosCompletion("zero", oid, io: self)
        let op = rados_create_write_op()!
        defer { rados_release_write_op(op) }
        rados_write_op_assert_exists(op)
        rados_write_op_zero(op, offset, length)
        try check(rados_aio_write_op_operate(op, handle, completion.handle, oid, nil, 0), "zero", oid)
        return completion
    }

    /// Removes object `oid` (ENOENT when absent).
    public func aioRemove(_ oid: String) throws -> RadosCompletion {
        let completion = try RadosCompletion("remove", oid, io: self)
        try check(rados_aio_remove(handle, oid, completion.handle), "remove", oid)
        return completion
    }

    /// Size of object `oid`, read from the completion's `size` after `wait()` (ENOENT when absent).
    public func aioStat(_ oid: String) throws -> RadosCompletion {
        let completion = try RadosCompletion("stat", oid, io: self)
        try check(rados_aio_stat(handle, oid, completion.handle, completion.statSize, completion.statTime), "stat", oid)
        return completion
    }

    // MARK: Synchronous control path

    /// Size of object `oid`, or nil when it does not exist.
    public func size(of oid: String) throws -> UInt64? {
        var size: UInt64 = 0
        var mtime: time_t = 0
        let result = rados_stat(handle, oid, &size, &mtime)
        if result == -ENOENT { return nil }
        try check(result, "stat", oid)
        return size
    }

    /// Cuts (or extends with zeros) object `oid` to `size` bytes, creating it when absent.
    public func truncate(_ oid: String, to size: UInt64) throws {
        try check(rados_trunc(handle, oid, size), "truncate", oid)
    }

    /// Removes object `oid`; an absent object is not an error.
    public func remove(_ oid: String) throws {
        let result = rados_remove(handle, oid)
        if result != -ENOENT { try check(result, "remove", oid) }
    }

    /// Writes the whole object (replacing its content) and waits for the OSDs to hold it.
    public func writeFull(_ oid: String, _ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { buffer in
            try check(
                rados_write_full(handle, oid, buffer.baseAddress?.assumingMemoryBound(to: CChar.self), buffer.count),
                "write full", oid)
        }
    }

    /// Reads up to `limit` bytes of object `oid` from its start; nil when it does not exist.
    public func read(_ oid: String, limit: Int = 1 << 20) throws -> [UInt8]? {
        var bytes = [UInt8](repeating: 0, count: limit)
        let result = bytes.withUnsafeMutableBytes { buffer in
            rados_read(handle, oid, buffer.baseAddress?.assumingMemoryBound(to: CChar.self), buffer.count, 0)
        }
        if result == -ENOENT { return nil }
        try check(result, "read", oid)
        return Array(bytes[..<Int(result)])
    }

    /// Value of extended attribute `name` of object `oid`; nil when the object or the attribute is absent.
    public func xattr(_ oid: String, _ name: String) throws -> String? {
        var buffer = [CChar](repeating: 0, count: 4096)
        let result = rados_getxattr(handle, oid, name, &buffer, buffer.count)
        if result == -ENOENT || result == -ENODATA { return nil }
        try check(result, "getxattr \(name)", oid)
        return String(decoding: buffer[..<Int(result)].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Sets extended attribute `name` of object `oid` (creating the object) and waits for the OSDs.
    public func setXattr(_ oid: String, _ name: String, _ value: String) throws {
        let bytes = Array(value.utf8)
        try bytes.withUnsafeBytes { buffer in
            try check(
                rados_setxattr(handle, oid, name, buffer.baseAddress?.assumingMemoryBound(to: CChar.self), buffer.count),
                "setxattr \(name)", oid)
        }
    }

    /// Space used by the pool's objects (all namespaces).
    public func poolUsage() throws -> (bytes: UInt64, objects: UInt64) {
        var stat = rados_pool_stat_t()
        try check(rados_ioctx_pool_stat(handle, &stat), "pool stat", pool)
        return (stat.num_bytes, stat.num_objects)
    }
}
