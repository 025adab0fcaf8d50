import CCairnIO
import Glibc

/// Where an archive's bytes go: a file, a pipe, or memory in tests.
public protocol ArchiveOutput: AnyObject {
    func write(_ bytes: UnsafeRawBufferPointer) throws
    /// Everything written is handed to the OS (and made durable, for a regular file).
    func finish() throws
}

/// Where an archive's bytes come from. `read` returns 0 only at the end of the stream.
public protocol ArchiveInput: AnyObject {
    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int
}

/// An archive file or pipe written through a buffer, so that small record prefixes do not each cost a
/// system call.
public final class FileArchiveOutput: ArchiveOutput {
    /// Enough to batch many records per write(2); small next to the 4 MiB records themselves.
    static let bufferCapacity = 1 << 20
    /// How long a streamed archive waits for its reader to open the FIFO.
    static let fifoReaderWaitMilliseconds: UInt32 = 60_000
    /// A regular file's writeback is started every this many bytes, and the window before it waited
    /// for, so that at most two windows are dirty when `finish` fdatasyncs: the final sync then costs
    /// milliseconds instead of the whole archive's writeback after the last byte (measured: a 1 GiB
    /// archive spent most of its time in the final fdatasync without this).
    static let writebackWindow: UInt64 = 32 << 20

    private let descriptor: Int32
    private let ownsDescriptor: Bool
    private var buffer: [UInt8] = []
    public let path: String
    /// Regular files only: pipes have no writeback to spread.
    private var spreadsWriteback = false
    /// Bytes handed to write(2), and the end of the last window whose writeback was started.
    private var written: UInt64 = 0
    private var writebackStarted: UInt64 = 0

    /// Creates (or truncates) `path`. A FIFO is opened as is: that is how an archive streams to stdout.
    /// A FIFO nobody reads any more fails at once (ENXIO) instead of blocking the backup forever.
    public init(path: String) throws {
        self.path = path
        var status = stat()
        let isFIFO = stat(path, &status) == 0 && (status.st_mode & S_IFMT) == S_IFIFO
        var fd: Int32
        if isFIFO {
            // The reader (the CLI copying to its stdout) may open its end a moment after us; a reader
            // that never comes must not hold the backup forever.
            var waited: UInt32 = 0
            repeat {
                fd = open(path, O_WRONLY | O_NONBLOCK | O_CLOEXEC)
                guard fd < 0, errno == ENXIO, waited < Self.fifoReaderWaitMilliseconds else { break }
                usleep(10_000)
                waited += 10
            } while true
        } else {
            fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        }
        guard fd >= 0 else { throw ArchiveError(.io, "cannot create \(path): \(String(cString: strerror(errno)))") }
        // Back to blocking writes: the reader sets the pace.
        if isFIFO { _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) }
        descriptor = fd
        ownsDescriptor = true
        spreadsWriteback = !isFIFO
        buffer.reserveCapacity(Self.bufferCapacity)
    }

    /// Writes to an open descriptor (standard output) that the caller keeps.
    public init(descriptor: Int32, name: String) {
        self.descriptor = descriptor
        self.ownsDescriptor = false
        self.path = name
        buffer.reserveCapacity(Self.bufferCapacity)
    }

    deinit {
        if ownsDescriptor { close(descriptor) }
    }

    public func write(_ bytes: UnsafeRawBufferPointer) throws {
        if buffer.count + bytes.count > Self.bufferCapacity { try drain() }
        if bytes.count >= Self.bufferCapacity {
            try writeAll(bytes)
        } else {
            buffer.append(contentsOf: bytes)
        }
    }

    public func finish() throws {
        try drain()
        var status = stat()
        // fsync on a pipe fails with EINVAL; only a regular file can be made durable.
        if fstat(descriptor, &status) == 0, (status.st_mode & S_IFMT) == S_IFREG, fsync(descriptor) != 0 {
            throw ArchiveError(.io, "cannot make \(path) durable: \(String(cString: strerror(errno)))")
        }
    }

    private func drain() throws {
        guard !buffer.isEmpty else { return }
        try buffer.withUnsafeBytes { try writeAll($0) }
        buffer.removeAll(keepingCapacity: true)
    }

    private func writeAll(_ bytes: UnsafeRawBufferPointer) throws {
        var done = 0
        while done < bytes.count {
            let n = Glibc.write(descriptor, bytes.baseAddress! + done, bytes.count - done)
            if n < 0 {
                if errno == EINTR { continue }
                throw ArchiveError(.io, "cannot write \(path): \(String(cString: strerror(errno)))")
            }
            done += n
        }
        written += UInt64(bytes.count)
        if spreadsWriteback { spreadWriteback() }
    }

    /// Starts writeback of each window as it fills, and waits for the one before it: at most two windows
    /// are dirty, and the disk works while the archive is produced. Errors are left to the final
    /// fdatasync, which reports any writeback failure; where sync_file_range fails, this stops trying.
    private func spreadWriteback() {
        let window = Self.writebackWindow
        while written - writebackStarted >= window {
            guard cairn_start_writeback(descriptor, writebackStarted, window, 0) == 0,
                writebackStarted < window || cairn_start_writeback(descriptor, writebackStarted - window, window, 1) == 0
            else {
                spreadsWriteback = false
                return
            }
            writebackStarted += window
        }
    }
}

/// An archive file (or standard input) read front to back.
public final class FileArchiveInput: ArchiveInput {
    private let descriptor: Int32
    private let ownsDescriptor: Bool
    public let path: String

    public init(path: String) throws {
        self.path = path
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw ArchiveError(.io, "cannot open \(path): \(String(cString: strerror(errno)))") }
        descriptor = fd
        ownsDescriptor = true
    }

    public init(descriptor: Int32, name: String) {
        self.descriptor = descriptor
        self.ownsDescriptor = false
        self.path = name
    }

    deinit {
        if ownsDescriptor { close(descriptor) }
    }

    public func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        while true {
            let n = Glibc.read(descriptor, buffer.baseAddress!, buffer.count)
            if n >= 0 { return n }
            if errno == EINTR { continue }
            throw ArchiveError(.io, "cannot read \(path): \(String(cString: strerror(errno)))")
        }
    }
}

/// An archive in memory (tests, and small tools).
public final class MemoryArchive: ArchiveOutput, ArchiveInput {
    public private(set) var bytes: [UInt8]
    private var readPosition = 0

    public init(bytes: [UInt8] = []) { self.bytes = bytes }

    public func write(_ bytes: UnsafeRawBufferPointer) throws { self.bytes.append(contentsOf: bytes) }
    public func finish() throws {}

    public func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        let n = min(buffer.count, bytes.count - readPosition)
        guard n > 0 else { return 0 }
        bytes.withUnsafeBytes { source in
            buffer.baseAddress!.copyMemory(from: source.baseAddress! + readPosition, byteCount: n)
        }
        readPosition += n
        return n
    }
}
