import NBDProtocol
import NIOCore

/// What an export can do; the server turns this into transmission flags and refuses commands the export lacks.
public struct NBDExportCapabilities: OptionSet, Sendable, Hashable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// Writes, TRIM and WRITE_ZEROES are refused with EPERM.
    public static let readOnly = NBDExportCapabilities(rawValue: 1 << 0)
    /// FLUSH is supported (and so is the FUA command flag, see `fua`).
    public static let flush = NBDExportCapabilities(rawValue: 1 << 1)
    /// FUA on write-type commands is honoured by the export itself.
    public static let fua = NBDExportCapabilities(rawValue: 1 << 2)
    /// TRIM gives space back.
    public static let trim = NBDExportCapabilities(rawValue: 1 << 3)
    /// WRITE_ZEROES is supported (with NO_HOLE).
    public static let writeZeroes = NBDExportCapabilities(rawValue: 1 << 4)
    /// WRITE_ZEROES with FAST_ZERO can fail fast with ENOTSUP instead of writing slowly.
    public static let fastZero = NBDExportCapabilities(rawValue: 1 << 5)
    /// CACHE (read-ahead hint) is supported.
    public static let cache = NBDExportCapabilities(rawValue: 1 << 6)
    /// A FLUSH on any connection covers writes completed on every connection to this export.
    public static let multiConnection = NBDExportCapabilities(rawValue: 1 << 7)
    /// The `base:allocation` meta context is available.
    public static let blockStatus = NBDExportCapabilities(rawValue: 1 << 8)
    /// Advertise NBD_FLAG_ROTATIONAL (hint to the client's I/O scheduler).
    public static let rotational = NBDExportCapabilities(rawValue: 1 << 9)
    /// Cairn's copy-on-write extension (docs/NBD-EXTENSIONS.md): the `x-cairn:copy-on-write` context is
    /// offered, and a client that selects it may send NBD_CMD_CAIRN_COPY_AND_WRITE. The export implements
    /// `copyAndWrite` and answers `blockStatus` for that context.
    public static let copyAndWrite = NBDExportCapabilities(rawValue: 1 << 10)
}

/// A contiguous piece of a READ reply, in export coordinates.
public enum NBDReadSegment: Sendable {
    /// Bytes that were read; `data.readableBytes` is the length.
    case data(offset: UInt64, data: ByteBuffer)
    /// A range that reads as zeros and may be sent as NBD_REPLY_TYPE_OFFSET_HOLE.
    case hole(offset: UInt64, length: UInt32)
}

/// One extent of a BLOCK_STATUS answer. `flags` are the context's own bits (for base:allocation
/// NBD_STATE_HOLE = 1, NBD_STATE_ZERO = 2).
public struct NBDExtent: Sendable, Hashable {
    public var length: UInt64
    public var flags: UInt32
    public init(length: UInt64, flags: UInt32) {
        self.length = length
        self.flags = flags
    }
}

/// An error an export reports; the server maps `code` to the wire error and may send `message` in a
/// structured error chunk. Never carries raw errno values to the wire.
public struct NBDExportError: Error, Sendable, Hashable {
    public enum Code: Sendable, Hashable {
        case permissionDenied  // EPERM
        case ioError  // EIO
        case outOfMemory  // ENOMEM
        case invalid  // EINVAL
        case noSpace  // ENOSPC
        case overflow  // EOVERFLOW
        case notSupported  // ENOTSUP
        case shuttingDown  // ESHUTDOWN
    }

    public var code: Code
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }
}

/// One client's view of an open export. The server calls these from its event loop; an implementation
/// that blocks must hop to its own thread pool and complete the future on `eventLoop`.
public protocol NBDExport: AnyObject, Sendable {
    /// Export name as the client asked for it.
    var name: String { get }
    /// Free-text description for NBD_INFO_DESCRIPTION (nil: not sent).
    var exportDescription: String? { get }
    /// Size in bytes, read at GO/EXPORT_NAME time and for bounds checks.
    var size: UInt64 { get }
    var capabilities: NBDExportCapabilities { get }
    /// Block size constraints for NBD_INFO_BLOCK_SIZE, as the wire carries them: the server raises the
    /// minimum to at least 1 and caps the maximum payload at what it buffers before advertising them.
    var blockSizes: NBDBlockSizeConstraints { get }
    /// Meta context names this export answers BLOCK_STATUS for (e.g. "base:allocation").
    var metaContexts: [String] { get }
    /// Reachable only over TLS when the server runs selective TLS (proto.md "SELECTIVETLS"): before
    /// STARTTLS, INFO and GO answer NBD_REP_ERR_TLS_REQD and LIST leaves it out. The default is false.
    var requiresTLS: Bool { get }

    func read(offset: UInt64, length: UInt32, eventLoop: any EventLoop) -> EventLoopFuture<[NBDReadSegment]>
    /// A read the export can answer at once without blocking (data already in memory), called on the event
    /// loop before `read`; nil means "use `read`". The default always says nil.
    func readImmediately(offset: UInt64, length: UInt32) -> [NBDReadSegment]?
    func write(offset: UInt64, data: ByteBuffer, fua: Bool, eventLoop: any EventLoop) -> EventLoopFuture<Void>
    func flush(eventLoop: any EventLoop) -> EventLoopFuture<Void>
    func trim(offset: UInt64, length: UInt64, fua: Bool, eventLoop: any EventLoop) -> EventLoopFuture<Void>
    /// `punch`: the client did not set NO_HOLE, so the range may be deallocated.
    /// `fast`: FAST_ZERO; fail with `.notSupported` rather than write zeros slowly.
    func writeZeroes(
        offset: UInt64,
        length: UInt64,
        punch: Bool,
        fast: Bool,
        fua: Bool,
        eventLoop: any EventLoop
    ) -> EventLoopFuture<Void>
    func cache(offset: UInt64, length: UInt64, eventLoop: any EventLoop) -> EventLoopFuture<Void>
    /// Extents from `offset` covering at most `length` bytes (at least one extent, the first starting at
    /// `offset`; fewer bytes than asked is fine, the server trims to the request and to REQ_ONE).
    func blockStatus(
        context: String,
        offset: UInt64,
        length: UInt64,
        eventLoop: any EventLoop
    ) -> EventLoopFuture<[NBDExtent]>
    /// The same with a hint: at most `maximumExtents` extents will be used (1 for REQ_ONE; nil: as many as
    /// the export likes). Exports that can stop early implement this; the default ignores the hint.
    func blockStatus(
        context: String,
        offset: UInt64,
        length: UInt64,
        maximumExtents: Int?,
        eventLoop: any EventLoop
    ) -> EventLoopFuture<[NBDExtent]>
    /// COPY_AND_WRITE (NBD_CMD_CAIRN_COPY_AND_WRITE): the `copySize` bytes at `target` become a
    /// copy of those at `source` with `buffer` written `bufferOffset` bytes in, the copy made without the
    /// data leaving the storage. Afterwards the target needs no further copy-on-write. The server has
    /// checked bounds, alignment and that the buffer fits the chunk; the export checks the copy size.
    /// Only called with the `copyAndWrite` capability; the default fails with `.notSupported`.
    func copyAndWrite(
        target: UInt64,
        source: UInt64,
        copySize: UInt32,
        buffer: ByteBuffer,
        bufferOffset: UInt32,
        fua: Bool,
        eventLoop: any EventLoop
    ) -> EventLoopFuture<Void>
}

extension NBDExport {
    public var requiresTLS: Bool { false }

    public func readImmediately(offset: UInt64, length: UInt32) -> [NBDReadSegment]? { nil }

    public func blockStatus(
        context: String,
        offset: UInt64,
        length: UInt64,
        maximumExtents: Int?,
        eventLoop: any EventLoop
    ) -> EventLoopFuture<[NBDExtent]> {
        blockStatus(context: context, offset: offset, length: length, eventLoop: eventLoop)
    }

    /// Exports without the `copyAndWrite` capability never see the command; this is their answer if they
    /// somehow do.
    public func copyAndWrite(
        target: UInt64,
        source: UInt64,
        copySize: UInt32,
        buffer: ByteBuffer,
        bufferOffset: UInt32,
        fua: Bool,
        eventLoop: any EventLoop
    ) -> EventLoopFuture<Void> {
        eventLoop.makeFailedFuture(NBDExportError(.notSupported, "COPY_AND_WRITE is not supported by this export"))
    }
}

/// Who is connecting; passed to the catalog so it can apply policy and track sessions.
public struct NBDSessionInfo: Sendable, Hashable {
    /// Server-unique, increasing connection number (useful in logs).
    public var id: UInt64
    /// Remote address as text ("127.0.0.1:53412"), for logs and access control.
    public var remoteAddress: String
    /// The remote IP address alone ("127.0.0.1", "::1"), for access control.
    public var remoteIP: String?
    /// The subject of the client's certificate ("CN=backup-host,O=Example"), once TLS with a verified
    /// client certificate is up; nil otherwise.
    public var clientIdentity: String?
    /// True once the session runs over TLS.
    public var tls: Bool

    public init(
        id: UInt64, remoteAddress: String, remoteIP: String? = nil, clientIdentity: String? = nil, tls: Bool = false
    ) {
        self.id = id
        self.remoteAddress = remoteAddress
        self.remoteIP = remoteIP
        self.clientIdentity = clientIdentity
        self.tls = tls
    }
}

/// The session as it is now: created at accept, updated when TLS comes up. Confined to the
/// connection's event loop (the handler and the handshake state machine's directory share it).
final class NBDSessionReference: @unchecked Sendable {
    var info: NBDSessionInfo
    init(_ info: NBDSessionInfo) { self.info = info }
}

/// A line of NBD_OPT_LIST.
public struct NBDExportListing: Sendable, Hashable {
    public var name: String
    public var description: String?
    /// Listed only after STARTTLS under selective TLS (see `NBDExport.requiresTLS`).
    public var requiresTLS: Bool
    public init(name: String, description: String?, requiresTLS: Bool = false) {
        self.name = name
        self.description = description
        self.requiresTLS = requiresTLS
    }
}

/// The set of exports a server offers. Implemented by the daemon over the storage engine.
public protocol NBDExportCatalog: Sendable {
    /// Exports this session may see (NBD_OPT_LIST).
    func listExports(session: NBDSessionInfo) -> [NBDExportListing]
    /// Describe an export without attaching to it (NBD_OPT_INFO, LIST_META_CONTEXT). nil: unknown.
    func describe(name: String, session: NBDSessionInfo) -> (any NBDExport)?
    /// Attach a session to an export (NBD_OPT_GO / EXPORT_NAME). Throws `NBDExportError` when refused.
    func attach(name: String, session: NBDSessionInfo) throws -> any NBDExport
    /// The session that attached has gone (DISC, disconnect, or server shutdown).
    func detach(_ export: any NBDExport, session: NBDSessionInfo)
}
