/// A bounded pool of page-aligned buffers for O_DIRECT writes whose source buffer is not aligned (a
/// network payload never is). A buffer is borrowed for one write and given back; when all are out, the
/// borrower waits, so the memory they take is fixed whatever the load.
public final class DirectBuffers: @unchecked Sendable {
    // @unchecked: `free` and `outstanding` are only touched with `monitor` held.
    /// Size of one buffer: the engine's largest single write (`Pool.maximumWriteSegment`), so a direct
    /// write needs one buffer.
    public static let bufferSize = 64 << 10
    /// Buffers in the pool: twice the most I/O executor threads a daemon runs (`--io-threads` up to 32),
    /// so no writer waits unless something is very wrong. 64 x 64 KiB = 4 MiB at most.
    public static let bufferLimit = 64

    /// The pool every slot file borrows from.
    public static let shared = DirectBuffers()

    private let monitor = Monitor()
    private var free: [UnsafeMutableRawBufferPointer] = []
    private var outstanding = 0

    /// Borrows a buffer of `bufferSize` bytes aligned to `PosixStorageFile.directAlignment`.
    public func take() -> UnsafeMutableRawBufferPointer {
        monitor.withLock {
            while outstanding >= Self.bufferLimit { monitor.wait() }
            outstanding += 1
            if let buffer = free.popLast() { return buffer }
            return UnsafeMutableRawBufferPointer.allocate(
                byteCount: Self.bufferSize, alignment: PosixStorageFile.directAlignment)
        }
    }

    /// Gives a buffer from `take` back.
    public func give(_ buffer: UnsafeMutableRawBufferPointer) {
        monitor.withLock {
            outstanding -= 1
            free.append(buffer)
        }
        monitor.signal()
    }
}
