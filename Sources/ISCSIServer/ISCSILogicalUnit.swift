import ISCSIProtocol
import NIOCore

/// Why a logical unit refused or failed an operation; the handler turns it into sense data.
public struct ISCSILogicalUnitError: Error, Sendable, Equatable {
    public enum Code: Sendable, Equatable {
        /// The range is past the end (LBA OUT OF RANGE).
        case outOfRange
        /// The unit is read-only for this session (WRITE PROTECTED).
        case readOnly
        /// The pool is full (SPACE ALLOCATION FAILED WRITE PROTECT).
        case noSpace
        /// The server is shutting down or overloaded; the initiator may retry (NOT READY).
        case unavailable
        /// An argument the unit cannot take (INVALID FIELD IN CDB).
        case invalid
        /// A read or write failed (MEDIUM ERROR); never swallowed.
        case ioError
    }

    public var code: Code
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }
}

/// A range of a logical unit and whether it holds data (GET LBA STATUS).
public struct ISCSIAllocationExtent: Sendable, Equatable {
    public var length: UInt64
    public var mapped: Bool
    public init(length: UInt64, mapped: Bool) {
        self.length = length
        self.mapped = mapped
    }
}

/// The storage behind one logical unit, for one session. Offsets and lengths are in bytes and already
/// checked against the size. Called on the connection's event loop; an implementation that blocks hops
/// to its own threads and completes the future on `eventLoop`.
public protocol ISCSILogicalUnit: AnyObject, Sendable {
    /// Size in bytes (a multiple of the block size), read for every bounds check.
    var size: UInt64 { get }
    var readOnly: Bool { get }
    /// Unit serial number (VPD page 80): stable for the volume.
    var serial: String { get }
    /// A 60-bit number unique to the unit, for its NAA designator (VPD page 83).
    var identifier: UInt64 { get }

    func read(offset: UInt64, length: UInt32, eventLoop: any EventLoop) -> EventLoopFuture<ByteBuffer>
    func write(offset: UInt64, data: ByteBuffer, fua: Bool, eventLoop: any EventLoop) -> EventLoopFuture<Void>
    /// SYNCHRONIZE CACHE: every completed write is durable when this succeeds.
    func flush(eventLoop: any EventLoop) -> EventLoopFuture<Void>
    /// UNMAP, WRITE SAME with UNMAP: the range reads as zeros afterwards and may give space back.
    func unmap(offset: UInt64, length: UInt64, fua: Bool, eventLoop: any EventLoop) -> EventLoopFuture<Void>
    /// WRITE SAME of a zero block without UNMAP: the range reads as zeros and stays allocated.
    func writeZeroes(offset: UInt64, length: UInt64, fua: Bool, eventLoop: any EventLoop) -> EventLoopFuture<Void>
    /// Extents from `offset`, covering at most `length` bytes (at least one).
    func allocation(offset: UInt64, length: UInt64, eventLoop: any EventLoop) -> EventLoopFuture<[ISCSIAllocationExtent]>
    /// COMPARE AND WRITE: if the range holds `expected`, write `data` there; atomically with respect to
    /// every other write to the unit. nil: written; else the offset of the first byte that differed.
    func compareAndWrite(offset: UInt64, expected: ByteBuffer, data: ByteBuffer, fua: Bool, eventLoop: any EventLoop)
        -> EventLoopFuture<UInt32?>
    /// ORWRITE: `data` ORed into the range (`SCSIOrWrite`), read and written back atomically with respect
    /// to COMPARE AND WRITE and other ORWRITEs to the unit.
    func orWrite(offset: UInt64, data: ByteBuffer, fua: Bool, eventLoop: any EventLoop) -> EventLoopFuture<Void>
    /// EXTENDED COPY: `length` bytes of `source` at `sourceOffset` onto this unit at `offset`, done by the
    /// storage; ranges already checked. The default reads and writes a piece at a time (still inside the
    /// target: nothing goes back to the initiator); a unit whose storage can share data does better.
    func copy(
        from source: any ISCSILogicalUnit, sourceOffset: UInt64, offset: UInt64, length: UInt64,
        eventLoop: any EventLoop
    ) -> EventLoopFuture<Void>
}

extension ISCSILogicalUnit {
    /// Bytes the default `copy` moves per read and write.
    public static var copyPiece: UInt64 { 1 << 20 }

    public func copy(
        from source: any ISCSILogicalUnit, sourceOffset: UInt64, offset: UInt64, length: UInt64,
        eventLoop: any EventLoop
    ) -> EventLoopFuture<Void> {
        copyByPieces(from: source, sourceOffset: sourceOffset, offset: offset, length: length, eventLoop: eventLoop)
    }

    /// The default `copy`: READ from the source and WRITE here, `copyPiece` bytes at a time.
    public func copyByPieces(
        from source: any ISCSILogicalUnit, sourceOffset: UInt64, offset: UInt64, length: UInt64,
        eventLoop: any EventLoop
    ) -> EventLoopFuture<Void> {
        var chain = eventLoop.makeSucceededVoidFuture()
        var done: UInt64 = 0
        while done < length {
            let count = min(length - done, Self.copyPiece)
            let at = done
            chain = chain.flatMap {
                source.read(offset: sourceOffset + at, length: UInt32(count), eventLoop: eventLoop).flatMap { data in
                    self.write(offset: offset + at, data: data, fua: false, eventLoop: eventLoop)
                }
            }
            done += count
        }
        return chain
    }
}

/// Counters of one target, kept by whoever serves it (the daemon's Prometheus registry); the handler
/// reports to it on the event loop, so an implementation only does atomic increments.
public protocol ISCSITargetMetrics: Sendable {
    /// A SCSI command was answered: its operation code and status (GOOD, CHECK CONDITION, RESERVATION
    /// CONFLICT).
    func command(opcode: UInt8, status: UInt8)
    /// Data that crossed the wire: data-in sent to the initiator, data-out received from it.
    func transferred(dataIn: UInt64, dataOut: UInt64)
    /// Bytes an EXTENDED COPY moved inside the storage (none of them crossed the wire).
    func copied(bytes: UInt64)
}

/// Who is logging in; passed to the catalog for access rules and session tracking.
public struct ISCSIInitiatorInfo: Sendable, Hashable {
    /// Server-unique connection number.
    public var id: UInt64
    /// "127.0.0.1:53412".
    public var remoteAddress: String
    /// "127.0.0.1".
    public var remoteIP: String?
    /// The initiator's iSCSI name (InitiatorName key), once the login has sent it.
    public var initiatorName: String?
    /// The CHAP name the initiator authenticated as (nil: no CHAP): its identity for access rules.
    public var chapName: String?

    public init(id: UInt64, remoteAddress: String, remoteIP: String?, initiatorName: String? = nil) {
        self.id = id
        self.remoteAddress = remoteAddress
        self.remoteIP = remoteIP
        self.initiatorName = initiatorName
    }
}

/// The targets a server offers (one logical unit, LUN 0, per target). Implemented by the daemon.
public protocol ISCSITargetCatalog: Sendable {
    /// Target names this initiator may see (SendTargets=All).
    func targetNames(initiator: ISCSIInitiatorInfo) -> [String]
    /// Whether `target` exists for this initiator (login's TargetName check).
    func targetExists(_ target: String, initiator: ISCSIInitiatorInfo) -> Bool
    /// Attach a session to the target's logical unit when the login completes.
    func attach(target: String, initiator: ISCSIInitiatorInfo) throws -> any ISCSILogicalUnit
    /// The session ended (logout, disconnect, shutdown): called once per attach.
    func detach(_ unit: any ISCSILogicalUnit, initiator: ISCSIInitiatorInfo)
    /// EXTENDED COPY names another logical unit by its NAA identifier (`ISCSILogicalUnit.identifier`):
    /// the unit, attached for the length of the copy, if this initiator may use it; else nil.
    func copyUnit(identifier: UInt64, initiator: ISCSIInitiatorInfo) -> (any ISCSILogicalUnit)?
    /// Ends the attachment `copyUnit` made.
    func detachCopyUnit(_ unit: any ISCSILogicalUnit, initiator: ISCSIInitiatorInfo)
    /// The counters of `target`, if the catalog keeps any.
    func metrics(target: String) -> (any ISCSITargetMetrics)?
}

extension ISCSITargetCatalog {
    public func copyUnit(identifier: UInt64, initiator: ISCSIInitiatorInfo) -> (any ISCSILogicalUnit)? { nil }
    public func detachCopyUnit(_ unit: any ISCSILogicalUnit, initiator: ISCSIInitiatorInfo) {}
    public func metrics(target: String) -> (any ISCSITargetMetrics)? { nil }
}

extension ISCSILogicalUnitError {
    /// The sense data that tells the initiator about this error.
    var sense: SCSISense {
        switch code {
        case .outOfRange: .lbaOutOfRange
        case .readOnly: .writeProtected
        case .noSpace: .spaceAllocationFailed
        case .unavailable: .notReadyInProgress
        case .invalid: .invalidFieldInCDB
        case .ioError: .internalTargetFailure
        }
    }
}
