import CCairnIO
import Glibc
import Synchronization

/// A `StorageFile` on a real file descriptor: positional I/O with short-transfer loops, fdatasync,
/// fallocate-based hole punching, and in-kernel copies. Capabilities the filesystem lacks are latched
/// off after the first EOPNOTSUPP (as nbdkit's file plugin does), so the fallback costs one failed
/// syscall per file, not one per request.
public final class PosixStorageFile: StorageFile {
    public let path: String
    public let descriptor: Int32
    /// The same file opened with O_DIRECT for whole-block writes (-1: not asked for, or refused).
    private let directDescriptor: Int32
    /// The filesystem refused O_DIRECT at open (tmpfs: EINVAL) or at the first direct write.
    private let directRefusedAtOpen: Bool
    /// Start writeback right after each buffered write.
    private let writeThrough: Bool
    private let latched = Atomic<UInt8>(0)

    /// Capability bits that turned out not to work on this file.
    private enum Unsupported: UInt8 {
        case punchHole = 1
        case zeroRange = 2
        case dsyncWrite = 4
        case reflink = 8
        case copyFileRange = 16
        case nowaitRead = 32
        case direct = 64
        case preallocate = 128
    }

    /// Alignment O_DIRECT needs of offsets, lengths and buffer addresses: the logical block size of
    /// every disk Cairn runs on is at most 4 KiB (512e and 4Kn drives, virtio-blk, NVMe).
    public static let directAlignment = 4096

    /// Size of the bounce buffer for userspace copies and zero writes (1 MiB: large enough to stream,
    /// small enough to keep per-thread memory bounded).
    static let bounceBufferSize = 1 << 20

    /// Opens (and with `create`, creates with mode 0600) a file for reading and writing. With `direct`,
    /// whole-block writes bypass the page cache (O_DIRECT) where the filesystem allows it; elsewhere, and
    /// for partial blocks, writes go through the page cache as without it.
    public convenience init(path: String, create: Bool = false, direct: Bool = false, writeThrough: Bool = false) throws {
        try self.init(path: path, create: create, direct: direct, writeThrough: writeThrough) { cairn_open_direct($0) }
    }

    /// `openDirect` opens the O_DIRECT descriptor (-errno on failure): tests stand in a filesystem that
    /// refuses it (tmpfs did until Linux 6.6).
    @_spi(Testing)
    public init(
        path: String, create: Bool, direct: Bool, writeThrough: Bool, openDirect: (UnsafePointer<CChar>) -> Int32
    ) throws {
        self.writeThrough = writeThrough
        let flags = O_RDWR | O_CLOEXEC | (create ? O_CREAT : 0)
        let fd = open(path, flags, 0o600)
        guard fd >= 0 else { throw IOError(operation: "open", path: path, errno: errno) }
        self.path = path
        self.descriptor = fd
        var directFD: Int32 = -1
        var refused = false
        if direct {
            directFD = openDirect(path)
            if directFD < 0 {
                let code = -directFD
                directFD = -1
                guard code == EINVAL else {
                    Glibc.close(fd)
                    throw IOError(operation: "open(O_DIRECT)", path: path, errno: code)
                }
                refused = true
            }
        }
        directDescriptor = directFD
        directRefusedAtOpen = refused
    }

    deinit {
        Glibc.close(descriptor)
        if directDescriptor >= 0 { Glibc.close(directDescriptor) }
    }

    public var writeMode: StorageWriteMode {
        if directDescriptor >= 0 && !isLatched(.direct) { return .direct }
        if directRefusedAtOpen || isLatched(.direct) { return .directRefused }
        return writeThrough ? .writeThrough : .buffered
    }

    private func isLatched(_ capability: Unsupported) -> Bool {
        latched.load(ordering: .relaxed) & capability.rawValue != 0
    }

    private func latch(_ capability: Unsupported) {
        latched.bitwiseOr(capability.rawValue, ordering: .relaxed)
    }

    /// Marks reflink unusable for this file (set by the pool's capability probe).
    public func disableReflink() { latch(.reflink) }
    /// Marks copy_file_range unusable for this file (set by the pool's capability probe).
    public func disableCopyFileRange() { latch(.copyFileRange) }
    /// Marks RWF_DSYNC unusable for this file, as a kernel without it would (tests of the fallback).
    public func disableDsyncWrites() { latch(.dsyncWrite) }

    /// The copy method `copy(from:...)` will try first.
    public var preferredCopyMethod: CopyMethod {
        if !isLatched(.reflink) { return .reflink }
        if !isLatched(.copyFileRange) { return .copyFileRange }
        return .userspace
    }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {
        var done = 0
        while done < buffer.count {
            let n = cairn_pread(
                descriptor, buffer.baseAddress! + done, UInt64(buffer.count - done), offset + UInt64(done))
            if n == -Int64(EINTR) { continue }
            if n < 0 { throw IOError("pread", path, result: n) }
            if n == 0 {
                // Past the end of the file: a sparse slot file reads as zeros there.
                (buffer.baseAddress! + done).initializeMemory(as: UInt8.self, repeating: 0, count: buffer.count - done)
                return
            }
            done += Int(n)
        }
    }

    public func readIfCached(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws -> Bool {
        guard !isLatched(.nowaitRead) else { return false }
        let n = cairn_pread_nowait(descriptor, buffer.baseAddress!, UInt64(buffer.count), offset)
        if n == Int64(buffer.count) { return true }
        if n == -Int64(EOPNOTSUPP) || n == -Int64(EINVAL) {
            latch(.nowaitRead)
            return false
        }
        // EAGAIN (not cached), a short read (partly cached, or the end of the file), EINTR: let the
        // blocking path handle it.
        if n >= 0 || n == -Int64(EAGAIN) || n == -Int64(EINTR) { return false }
        throw IOError("preadv2(RWF_NOWAIT)", path, result: n)
    }

    /// Only a page-cache file writes immediately (an O_DIRECT write waits for the disk, and write-through
    /// starts writeback, which may wait for the device's queue), and only whole pages: the kernel reads a
    /// partly written page from the disk first when it is not cached.
    public func writeIfImmediate(_ buffer: UnsafeRawBufferPointer, at offset: UInt64) throws -> Bool {
        let page = UInt64(Self.directAlignment)
        guard offset % page == 0, UInt64(buffer.count) % page == 0 else { return false }
        switch writeMode {
        case .buffered, .directRefused:
            try write(buffer, at: offset)
            return true
        case .direct, .writeThrough:
            return false
        }
    }

    public func write(_ buffer: UnsafeRawBufferPointer, at offset: UInt64) throws {
        if try writeDirect(buffer, at: offset, durably: false) { return }
        try writeAll(buffer, at: offset) { fd, pointer, length, position in
            cairn_pwrite(fd, pointer, length, position)
        }
        if writeThrough && buffer.count > 0 {
            // Only starts writeback (no wait, no durability): an error here shows up at the next fdatasync.
            _ = cairn_start_writeback(descriptor, offset, UInt64(buffer.count), 0)
        }
    }

    /// Writes whole blocks with O_DIRECT, from an aligned buffer (the caller's, or one borrowed from
    /// `DirectBuffers`). False when the write is not for the direct path (partial blocks, no O_DIRECT):
    /// nothing was written, the caller writes through the page cache. The first EINVAL latches the direct
    /// path off (a filesystem that accepts O_DIRECT at open but not for I/O); any other error fails.
    private func writeDirect(_ buffer: UnsafeRawBufferPointer, at offset: UInt64, durably: Bool) throws -> Bool {
        let align = Self.directAlignment
        guard directDescriptor >= 0, !isLatched(.direct), buffer.count > 0, buffer.count % align == 0,
            offset % UInt64(align) == 0
        else { return false }
        let fd = directDescriptor
        func put(_ part: UnsafeRawBufferPointer, at position: UInt64) -> Int64 {
            durably
                ? cairn_pwrite_dsync(fd, part.baseAddress!, UInt64(part.count), position)
                : cairn_pwrite(fd, part.baseAddress!, UInt64(part.count), position)
        }
        var done = 0
        var scratch: UnsafeMutableRawBufferPointer?
        defer { if let scratch { DirectBuffers.shared.give(scratch) } }
        let aligned = Int(bitPattern: buffer.baseAddress!) % align == 0
        while done < buffer.count {
            var part = UnsafeRawBufferPointer(rebasing: buffer[done...])
            if !aligned {
                if scratch == nil { scratch = DirectBuffers.shared.take() }
                let n = min(scratch!.count, part.count)
                scratch!.baseAddress!.copyMemory(from: part.baseAddress!, byteCount: n)
                part = UnsafeRawBufferPointer(rebasing: scratch![0..<n])
            }
            let n = put(part, at: offset + UInt64(done))
            if n == -Int64(EINTR) { continue }
            if n == -Int64(EINVAL) && done == 0 {
                latch(.direct)
                return false
            }
            if n < 0 { throw IOError(durably ? "pwritev2(O_DIRECT, RWF_DSYNC)" : "pwrite(O_DIRECT)", path, result: n) }
            if n == 0 || Int(n) % align != 0 {
                // A short direct write ends off a block boundary: finish through the page cache.
                let rest = UnsafeRawBufferPointer(rebasing: buffer[(done + Int(n))...])
                try writeAll(rest, at: offset + UInt64(done) + UInt64(n)) { fd, pointer, length, position in
                    cairn_pwrite(fd, pointer, length, position)
                }
                if durably { try sync() }
                return true
            }
            done += Int(n)
        }
        return true
    }

    public func writeDurably(_ buffer: UnsafeRawBufferPointer, at offset: UInt64) throws {
        if !isLatched(.dsyncWrite) && directDescriptor >= 0 && !isLatched(.direct) {
            do {
                if try writeDirect(buffer, at: offset, durably: true) { return }
            } catch let error as IOError where error.kind == .notSupported {
                latch(.dsyncWrite)
            }
        }
        if !isLatched(.dsyncWrite) {
            do {
                try writeAll(buffer, at: offset) { fd, pointer, length, position in
                    cairn_pwrite_dsync(fd, pointer, length, position)
                }
                return
            } catch let error as IOError where error.kind == .notSupported {
                latch(.dsyncWrite)
            }
        }
        try write(buffer, at: offset)
        try sync()
    }

    private func writeAll(
        _ buffer: UnsafeRawBufferPointer,
        at offset: UInt64,
        _ call: (Int32, UnsafeRawPointer, UInt64, UInt64) -> Int64
    ) throws {
        var done = 0
        while done < buffer.count {
            let n = call(descriptor, buffer.baseAddress! + done, UInt64(buffer.count - done), offset + UInt64(done))
            if n == -Int64(EINTR) { continue }
            if n < 0 { throw IOError("pwrite", path, result: n) }
            done += Int(n)
        }
    }

    public func sync() throws {
        while true {
            let rc = cairn_fdatasync(descriptor)
            if rc == -EINTR { continue }
            if rc < 0 { throw IOError("fdatasync", path, result: Int64(rc)) }
            return
        }
    }

    /// Only on the direct path: buffered writes are allocated at writeback (delayed allocation) anyway,
    /// where an fallocate would only add a syscall and unwritten extents to convert.
    public func preallocate(at offset: UInt64, length: UInt64) throws {
        guard length > 0, writeMode == .direct, !isLatched(.preallocate) else { return }
        let rc = cairn_allocate(descriptor, offset, length)
        if rc == 0 { return }
        let error = IOError("fallocate", path, result: Int64(rc))
        guard error.kind == .notSupported else { throw error }
        latch(.preallocate)
    }

    public func punchHole(at offset: UInt64, length: UInt64) throws {
        guard length > 0 else { return }
        if !isLatched(.punchHole) {
            let rc = cairn_punch_hole(descriptor, offset, length)
            if rc == 0 { return }
            let error = IOError("fallocate(PUNCH_HOLE)", path, result: Int64(rc))
            guard error.kind == .notSupported else { throw error }
            latch(.punchHole)
        }
        try writeZeros(at: offset, length: length)
    }

    public func zeroRange(at offset: UInt64, length: UInt64) throws {
        guard length > 0 else { return }
        if !isLatched(.zeroRange) {
            let rc = cairn_zero_range(descriptor, offset, length)
            if rc == 0 { return }
            let error = IOError("fallocate(ZERO_RANGE)", path, result: Int64(rc))
            guard error.kind == .notSupported else { throw error }
            latch(.zeroRange)
        }
        try writeZeros(at: offset, length: length)
    }

    private func writeZeros(at offset: UInt64, length: UInt64) throws {
        let zeros = UnsafeMutableRawBufferPointer.allocate(
            byteCount: min(Int(length), Self.bounceBufferSize), alignment: 4096)
        defer { zeros.deallocate() }
        zeros.initializeMemory(as: UInt8.self, repeating: 0)
        var done: UInt64 = 0
        while done < length {
            let n = min(UInt64(zeros.count), length - done)
            try write(UnsafeRawBufferPointer(rebasing: zeros[0..<Int(n)]), at: offset + done)
            done += n
        }
    }

    @discardableResult
    public func copy(from source: any StorageFile, at sourceOffset: UInt64, to offset: UInt64, length: UInt64) throws
        -> CopyMethod
    {
        guard length > 0 else { return preferredCopyMethod }
        if let source = source as? PosixStorageFile {
            if !isLatched(.reflink) {
                let rc = cairn_clone_range(source.descriptor, sourceOffset, length, descriptor, offset)
                if rc == 0 { return .reflink }
                let error = IOError("ioctl(FICLONERANGE)", path, result: Int64(rc))
                // EINVAL: unaligned range or a filesystem without reflink; either way fall back, and
                // latch only when the filesystem says it cannot do it at all.
                guard error.kind == .notSupported || error.kind == .invalid else { throw error }
                if error.kind == .notSupported { latch(.reflink) }
            }
            if !isLatched(.copyFileRange) {
                do {
                    try copyFileRange(from: source, at: sourceOffset, to: offset, length: length)
                    return .copyFileRange
                } catch let error as IOError where error.kind == .notSupported {
                    latch(.copyFileRange)
                }
            }
        }
        try copyThroughUserspace(from: source, at: sourceOffset, to: offset, length: length)
        return .userspace
    }

    private func copyFileRange(from source: PosixStorageFile, at sourceOffset: UInt64, to offset: UInt64, length: UInt64)
        throws
    {
        var done: UInt64 = 0
        while done < length {
            let n = cairn_copy_file_range(
                source.descriptor, sourceOffset + done, descriptor, offset + done, length - done)
            if n == -Int64(EINTR) { continue }
            if n < 0 { throw IOError("copy_file_range", path, result: n) }
            if n == 0 {
                // Source ended early (sparse tail): the rest reads as zeros.
                try writeZeros(at: offset + done, length: length - done)
                return
            }
            done += UInt64(n)
        }
    }

    private func copyThroughUserspace(from source: any StorageFile, at sourceOffset: UInt64, to offset: UInt64,
        length: UInt64) throws
    {
        let bounce = UnsafeMutableRawBufferPointer.allocate(
            byteCount: min(Int(length), Self.bounceBufferSize), alignment: 4096)
        defer { bounce.deallocate() }
        var done: UInt64 = 0
        while done < length {
            let n = Int(min(UInt64(bounce.count), length - done))
            let part = UnsafeMutableRawBufferPointer(rebasing: bounce[0..<n])
            try source.read(into: part, at: sourceOffset + done)
            try write(UnsafeRawBufferPointer(part), at: offset + done)
            done += UInt64(n)
        }
    }

    public func size() throws -> UInt64 {
        var st = stat()
        guard fstat(descriptor, &st) == 0 else { throw IOError(operation: "fstat", path: path, errno: errno) }
        return UInt64(st.st_size)
    }

    public func allocatedBytes() throws -> UInt64 {
        let n = cairn_allocated_bytes(descriptor)
        if n < 0 { throw IOError("fstat", path, result: n) }
        return UInt64(n)
    }

    /// POSIX_FADV_WILLNEED: the kernel queues the reads and returns.
    public func prefetch(at offset: UInt64, length: UInt64) {
        _ = posix_fadvise(descriptor, off_t(offset), off_t(length), POSIX_FADV_WILLNEED)
    }

    public func nextData(from offset: UInt64) throws -> UInt64? {
        let n = cairn_seek_data(descriptor, offset)
        if n == -Int64(ENXIO) { return nil }
        if n < 0 { throw IOError("lseek(SEEK_DATA)", path, result: n) }
        return UInt64(n)
    }

    public func truncate(to length: UInt64) throws {
        guard ftruncate(descriptor, off_t(length)) == 0 else {
            throw IOError(operation: "ftruncate", path: path, errno: errno)
        }
    }
}
