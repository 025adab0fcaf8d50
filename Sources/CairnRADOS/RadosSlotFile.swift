import CairnIO
import Glibc
import Synchronization

/// A slot file striped over RADOS objects of `objectSize` bytes: object `i` holds bytes
/// `[i·objectSize, (i+1)·objectSize)` and is named `<name>.<i as 16 hex digits>`. A missing object
/// reads as zeros. The file's length and the number of objects that may exist live as extended
/// attributes of `<name>.meta`.
///
/// Writes are write-behind: `write` hands the data to librados (which copies it) and returns; `sync`
/// is the barrier that waits for every earlier write's acknowledgement, which RADOS gives only once
/// the data is durable on the OSDs. A failed write fails every later `sync`, so metadata never
/// commits over data the cluster did not take. librados applies one client's operations on one
/// object in order, so a read after a write sees it.
public final class RadosSlotFile: StorageFile, @unchecked Sendable {
    public let path: String
    let io: RadosIOContext
    let name: String
    public let objectSize: UInt64
    let state: Mutex<State>
    /// What `<name>.meta` records; held while its attributes are written so that two writers cannot
    /// store them out of order.
    let recorded: Mutex<Recorded>

    struct Pending {
        let completion: RadosCompletion
        /// zero/punch on an absent object: nothing to do, not an error.
        let absentIsFine: Bool
    }

    struct Recorded {
        var size: UInt64
        /// Objects with an index below this may exist (recorded before any is created).
        var reservedObjects: UInt64
    }

    struct State {
        var size: UInt64
        var pending: [Pending] = []
        /// The first write the cluster refused; every later sync fails with it.
        var failure: RadosError?
        /// Counts submitted changes (writes, zeroes, punches, truncations): what `nextData` found is
        /// reusable only while this is unchanged.
        var generation: UInt64 = 0
        /// A range `nextData` read as all zeros, at `generation`.
        var knownZero: (range: Range<UInt64>, generation: UInt64)?
    }

    /// Writes in flight per file before a writer waits for the oldest: bounds the memory librados
    /// holds copies in (256 × a 64 KiB chunk = 16 MiB) while keeping the OSD's queue deep.
    public static let maxPendingWrites = 256
    /// Objects reserved at once in `<name>.meta` before creating new ones: one synchronous attribute
    /// write per this many objects when the file grows.
    static let reservationStep: UInt64 = 64

    var metaObject: String { name + ".meta" }
    func objectName(_ index: UInt64) -> String {
        let hex = String(index, radix: 16)
        return name + "." + String(repeating: "0", count: max(0, 16 - hex.count)) + hex
    }

    /// Opens (creating when absent) the slot file `name`. Objects written after the last `sync` before a
    /// crash are past the recorded length: they are cut away here so the file reads as zeros there.
    public init(io: RadosIOContext, name: String, objectSize: UInt64) throws {
        precondition(objectSize > 0 && objectSize.nonzeroBitCount == 1, "object size must be a power of two")
        self.io = io
        self.name = name
        self.objectSize = objectSize
        self.path = "rados:\(io.pool)\(io.namespace.isEmpty ? "" : "/" + io.namespace)/\(name)"
        let size = try io.xattr(name + ".meta", "size").flatMap { UInt64($0) } ?? 0
        let reserved = try io.xattr(name + ".meta", "objects").flatMap { UInt64($0) } ?? 0
        state = Mutex(State(size: size))
        recorded = Mutex(Recorded(size: size, reservedObjects: reserved))
        try cutAway(from: size, reserved: reserved)
        try persist(size: size, reserved: (size + objectSize - 1) / objectSize)
        recorded.withLock { $0.reservedObjects = (size + objectSize - 1) / objectSize }
    }

    /// Removes whatever lies at or past `length` in objects below `reserved`.
    private func cutAway(from length: UInt64, reserved: UInt64) throws {
        let firstWhole = (length + objectSize - 1) / objectSize
        if firstWhole < reserved {
            var removals: [RadosCompletion] = []
            for index in firstWhole..<reserved {
                removals.append(try io.aioRemove(objectName(index)))
                if removals.count >= 64 { try waitAll(&removals, absentIsFine: true) }
            }
            try waitAll(&removals, absentIsFine: true)
        }
        if length % objectSize != 0, try io.size(of: objectName(length / objectSize)) != nil {
            try io.truncate(objectName(length / objectSize), to: length % objectSize)
        }
    }

    private func waitAll(_ completions: inout [RadosCompletion], absentIsFine: Bool) throws {
        defer { completions.removeAll() }
        for completion in completions {
            do { try completion.wait() } catch let error as RadosError where absentIsFine && error.errno == ENOENT {}
        }
    }

    private func persist(size: UInt64, reserved: UInt64) throws {
        try io.setXattr(metaObject, "objects", String(reserved))
        try io.setXattr(metaObject, "size", String(size))
    }

    /// Calls `body` for each object-sized piece of `[offset, offset+length)`:
    /// (object index, offset in object, offset in the range, piece length).
    func forEachPiece(at offset: UInt64, length: Int, _ body: (UInt64, UInt64, Int, Int) throws -> Void) rethrows {
        var done = 0
        while done < length {
            let position = offset + UInt64(done)
            let inObject = position % objectSize
            let piece = min(length - done, Int(objectSize - inObject))
            try body(position / objectSize, inObject, done, piece)
            done += piece
        }
    }

    func ioError(_ error: any Error, _ operation: String) -> IOError {
        let errno = (error as? RadosError)?.errno ?? EIO
        return IOError(operation: operation, path: path, errno: errno)
    }
}
