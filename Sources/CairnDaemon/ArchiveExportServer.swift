import CairnArchive
import Logging
import NBDProtocol
import NBDServer
import NIOCore

/// TLS for `cairn backup export`: the credentials `cairn serve` takes (X.509 PEM files, or a psktool
/// pre-shared key file), so that `nbds://` clients (qemu-img, nbdinfo, nbdcopy) read an archive over TLS.
public struct ArchiveExportTLS: Sendable {
    /// `.selective`: TLS is offered and the export readable either way; `.required`: nothing but
    /// STARTTLS is answered before TLS is up.
    public var mode: NBDTLSMode
    public var certificate: String?
    public var privateKey: String?
    /// CA that client certificates must chain to (then clients without one are refused).
    public var clientCA: String?
    /// A psktool file (`username:hexkey` lines), instead of certificates.
    public var preSharedKeys: String?

    public init(
        mode: NBDTLSMode, certificate: String? = nil, privateKey: String? = nil, clientCA: String? = nil,
        preSharedKeys: String? = nil
    ) {
        self.mode = mode
        self.certificate = certificate
        self.privateKey = privateKey
        self.clientCA = clientCA
        self.preSharedKeys = preSharedKeys
    }

    /// Loads the credentials; the error names the file that could not be used.
    func load() throws -> NBDServerTLS {
        if let keys = preSharedKeys { return try NBDServerTLS.loadPreSharedKeys(keys) }
        guard let certificate, let privateKey else {
            throw ArchiveError(
                .invalidArgument, "TLS needs a certificate and a private key (--tls-cert, --tls-key) or --tls-psk-file")
        }
        return try NBDServerTLS.load(certificateChain: certificate, privateKey: privateKey, clientCA: clientCA)
    }
}

/// `cairn backup export`: serves an archive chain read-only over NBD under one export name, so that
/// standard tools read a backup without Cairn (`qemu-img convert nbd://HOST:PORT/NAME out.qcow2`), over
/// TLS when given credentials (`nbds://`).
public enum ArchiveExportServer {
    /// Indexes (and verifies) the archives, loads the TLS credentials, listens, and serves until the
    /// process is stopped. `ready` gets the port actually bound.
    public static func run(
        paths: [String], host: String, port: Int, name: String?, tls: ArchiveExportTLS? = nil, logger: Logger,
        ready: (_ port: Int, _ name: String) -> Void
    ) async throws {
        let image = try ArchiveImage(paths: paths)
        let catalog = ArchiveCatalog(image: image, name: name ?? image.header.volume)
        var configuration = NBDServerConfiguration(host: host, port: port)
        if let tls, tls.mode != .disabled {
            configuration.handshake.tlsMode = tls.mode
            do {
                configuration.tls = try tls.load()
            } catch {
                // Named after the file that could not be used; the CLI prints it and exits non-zero.
                throw ArchiveError(.invalidArgument, "cannot serve over TLS: \(error)")
            }
        }
        let server = try await NBDServer.start(catalog: catalog, configuration: configuration, logger: logger)
        ready(server.port, catalog.export.name)
        while !Task.isCancelled { try await Task.sleep(nanoseconds: 1_000_000_000) }
        await server.close()
    }
}

/// One read-only export over an `ArchiveImage`.
final class ArchiveCatalog: NBDExportCatalog {
    let export: ArchiveExport

    init(image: ArchiveImage, name: String) { export = ArchiveExport(image: image, name: name) }

    func listExports(session: NBDSessionInfo) -> [NBDExportListing] {
        [NBDExportListing(name: export.name, description: export.exportDescription)]
    }

    func describe(name: String, session: NBDSessionInfo) -> (any NBDExport)? { name == export.name ? export : nil }

    func attach(name: String, session: NBDSessionInfo) throws -> any NBDExport {
        guard name == export.name else { throw NBDExportError(.invalid, "no export named '\(name)'") }
        return export
    }

    func detach(_ export: any NBDExport, session: NBDSessionInfo) {}
}

final class ArchiveExport: NBDExport {
    let image: ArchiveImage
    let name: String
    var exportDescription: String? { "cairn backup \(image.header.archiveID) of \(image.header.volume) (read-only)" }
    var size: UInt64 { image.size }
    var capabilities: NBDExportCapabilities { [.readOnly, .multiConnection, .blockStatus, .cache] }
    var blockSizes: NBDBlockSizeConstraints { .init(minimum: 512, preferred: 4096, maximumPayload: 32 << 20) }
    var metaContexts: [String] { ["base:allocation"] }

    init(image: ArchiveImage, name: String) {
        self.image = image
        self.name = name
    }

    func read(offset: UInt64, length: UInt32, eventLoop: any EventLoop) -> EventLoopFuture<[NBDReadSegment]> {
        // pread from a local file: short enough to answer on the event loop for this one-client tool.
        eventLoop.makeCompletedFuture {
            var buffer = ByteBufferAllocator().buffer(capacity: Int(length))
            try buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: Int(length)) { raw in
                try self.image.read(offset: offset, into: UnsafeMutableRawBufferPointer(rebasing: raw[0..<Int(length)]))
                return Int(length)
            }
            return [.data(offset: offset, data: buffer)]
        }.flatMapErrorThrowing { error in throw NBDExportError(.ioError, "\(error)") }
    }

    func write(offset: UInt64, data: ByteBuffer, fua: Bool, eventLoop: any EventLoop) -> EventLoopFuture<Void> {
        eventLoop.makeFailedFuture(NBDExportError(.permissionDenied, "a backup archive is read-only"))
    }

    func flush(eventLoop: any EventLoop) -> EventLoopFuture<Void> { eventLoop.makeSucceededVoidFuture() }

    func trim(offset: UInt64, length: UInt64, fua: Bool, eventLoop: any EventLoop) -> EventLoopFuture<Void> {
        eventLoop.makeFailedFuture(NBDExportError(.permissionDenied, "a backup archive is read-only"))
    }

    func writeZeroes(
        offset: UInt64, length: UInt64, punch: Bool, fast: Bool, fua: Bool, eventLoop: any EventLoop
    ) -> EventLoopFuture<Void> {
        eventLoop.makeFailedFuture(NBDExportError(.permissionDenied, "a backup archive is read-only"))
    }

    func cache(offset: UInt64, length: UInt64, eventLoop: any EventLoop) -> EventLoopFuture<Void> {
        eventLoop.makeSucceededVoidFuture()
    }

    func blockStatus(context: String, offset: UInt64, length: UInt64, eventLoop: any EventLoop)
        -> EventLoopFuture<[NBDExtent]>
    {
        let end = min(size, offset + length)
        guard offset < end else { return eventLoop.makeFailedFuture(NBDExportError(.invalid, "offset past the end")) }
        return eventLoop.makeSucceededFuture(
            image.extents(offset: offset, length: end - offset).map { NBDExtent(length: $0.length, flags: $0.isData ? 0 : 3) })
    }
}
