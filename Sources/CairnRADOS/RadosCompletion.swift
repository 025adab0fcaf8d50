import CRados
import Glibc

/// One asynchronous librados operation in flight. librados runs it on its own threads; `wait()` blocks
/// the caller (a thread of the I/O executor, never an event loop) until the OSD has answered. A write's
/// answer means the data is durable on the OSDs: RADOS acknowledges only after every replica has it.
public final class RadosCompletion: @unchecked Sendable {
    let handle: rados_completion_t
    /// The context the operation runs in, kept alive until the operation has ended: destroying a
    /// context (or shutting its client down) under an operation in flight is undefined in librados.
    let io: RadosIOContext
    /// What the operation was, for its error.
    let operation: String
    let target: String
    /// Where a stat writes the object's size and time; librados holds these until the operation ends.
    let statSize = UnsafeMutablePointer<UInt64>.allocate(capacity: 1)
    let statTime = UnsafeMutablePointer<time_t>.allocate(capacity: 1)

    init(_ operation: String, _ target: String, io: RadosIOContext) throws {
        var completion: rados_completion_t?
        try check(rados_aio_create_completion2(nil, nil, &completion), "aio create completion", target)
        handle = completion!
        self.io = io
        self.operation = operation
        self.target = target
    }

    deinit {
        // The stat fields (and `io`, released after this body) must outlive the operation.
        rados_aio_wait_for_complete(handle)
        rados_aio_release(handle)
        statSize.deallocate()
        statTime.deallocate()
    }

    /// The object size a completed stat found.
    public var size: UInt64 { statSize.pointee }

    /// True once the OSD has answered.
    public var isComplete: Bool { rados_aio_is_complete(handle) != 0 }

    /// Waits for the answer and returns the operation's result (bytes read for a read), or throws its
    /// error.
    @discardableResult
    public func wait() throws -> Int32 {
        rados_aio_wait_for_complete(handle)
        return try check(rados_aio_get_return_value(handle), operation, target)
    }
}
