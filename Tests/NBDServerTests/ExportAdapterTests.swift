import NBDProtocol
import NIOCore
import Testing

@testable import NBDServer

/// The edge between the export contract and the wire: flags, error mapping, read layout checks.
@Suite("export adapter")
struct ExportAdapterTests {
    @Test("capabilities become transmission flags; write-type flags only on writable exports")
    func transmissionFlags() {
        let all = MemoryExport.allCapabilities.union(.rotational).transmissionFlags
        #expect(
            all == [
                .hasFlags, .sendFlush, .sendFUA, .sendTrim, .sendWriteZeroes, .sendFastZero, .sendCache, .canMultiConn,
                .rotational,
            ]
        )
        let readOnly = NBDExportCapabilities([.readOnly, .trim, .writeZeroes, .fastZero, .flush]).transmissionFlags
        #expect(readOnly == [.hasFlags, .readOnly, .sendFlush])
        #expect(NBDExportCapabilities([.fastZero]).transmissionFlags == [.hasFlags], "FAST_ZERO needs WRITE_ZEROES")
        #expect(NBDExportCapabilities([]).transmissionFlags == [.hasFlags])
    }

    @Test("descriptions offer base:allocation only with the blockStatus capability and cap the payload")
    func description() {
        let export = MemoryExport(
            name: "d",
            size: 4096,
            capabilities: [.blockStatus],
            blockSizes: NBDBlockSizeConstraints(minimum: 0, preferred: 4096, maximumPayload: .max),
            metaContexts: ["qemu:dirty-bitmap:x", "base:allocation"]
        )
        let description = NBDExportDescription(export: export, maximumPayload: 1 << 25)
        #expect(description.metaContexts == ["base:allocation", "qemu:dirty-bitmap:x"])
        #expect(description.blockSizes == NBDBlockSizeConstraints(minimum: 1, preferred: 4096, maximumPayload: 1 << 25))
        let without = MemoryExport(name: "e", size: 4096, capabilities: [], metaContexts: ["base:allocation"])
        #expect(NBDExportDescription(export: without, maximumPayload: 1 << 25).metaContexts.isEmpty)
    }

    @Test("export errors map to wire errors; ENOTSUP only for FAST_ZERO, EOVERFLOW never for WRITE")
    func errorMapping() {
        func wire(_ code: NBDExportError.Code, _ command: NBDCommandType, _ flags: NBDCommandFlags = []) -> NBDWireError
        {
            NBDExportError(code, "").wireError(for: command, flags: flags)
        }
        #expect(wire(.permissionDenied, .write) == .permissionDenied)
        #expect(wire(.ioError, .read) == .ioError)
        #expect(wire(.outOfMemory, .read) == .outOfMemory)
        #expect(wire(.invalid, .read) == .invalid)
        #expect(wire(.noSpace, .write) == .noSpace)
        #expect(wire(.overflow, .read) == .overflow && wire(.overflow, .write) == .invalid)
        #expect(wire(.notSupported, .writeZeroes, .fastZero) == .notSupported)
        #expect(wire(.notSupported, .writeZeroes) == .invalid && wire(.notSupported, .trim) == .invalid)
        #expect(wire(.shuttingDown, .flush) == .shutdown)
        struct Local: Error {}
        let request = NBDRequest(flags: [], type: .read, cookie: 1, offset: 0, length: 1)
        #expect(
            NBDRequestRejection(exportFailure: Local(), request: request)
                == NBDRequestRejection(.ioError, "internal error")
        )
        #expect(NBDExportError(.permissionDenied, "").optionReplyType == .errorPolicy)
        #expect(NBDExportError(.shuttingDown, "").optionReplyType == .errorShutdown)
        #expect(NBDExportError(.invalid, "").optionReplyType == .errorUnknown)
    }

    @Test("read segments must tile the request in order")
    func readLayout() {
        let data = ByteBuffer(repeating: 1, count: 512)
        let good: [NBDReadSegment] = [
            .data(offset: 0, data: data), .hole(offset: 512, length: 0), .hole(offset: 512, length: 512),
        ]
        #expect(NBDReadLayout.validated(good, offset: 0, length: 1024)?.count == 2)
        #expect(NBDReadLayout.validated([.data(offset: 0, data: data)], offset: 0, length: 1024) == nil, "short")
        #expect(NBDReadLayout.validated([.hole(offset: 512, length: 512)], offset: 0, length: 512) == nil, "misplaced")
        let overlap: [NBDReadSegment] = [.data(offset: 0, data: data), .hole(offset: 256, length: 768)]
        #expect(NBDReadLayout.validated(overlap, offset: 0, length: 1024) == nil, "overlapping")
    }
}
