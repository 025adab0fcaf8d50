@testable import CairnArchive
import CairnTestSupport
import Crypto
import Testing

private func header(
    id: String = "a1", kind: ArchiveHeader.Kind = .full, base: String? = nil, index: UInt32 = 0,
    size: UInt64 = 1 << 20
) -> ArchiveHeader {
    ArchiveHeader(
        archiveID: id, kind: kind, baseArchiveID: base, chainIndex: index, volume: "vol", volumeSize: size,
        chunkSize: 65536, method: "cow", splitAt: "2026-01-01T00:00:00Z", drain: "drained", sessionsAtSplit: 2)
}

/// An archive with two data extents (one longer than a record) and a zero range.
private func sample(_ h: ArchiveHeader = header()) throws -> MemoryArchive {
    let output = MemoryArchive()
    let writer = try ArchiveWriter(output: output, header: h)
    let first = [UInt8](repeating: 0xab, count: 8192)
    try first.withUnsafeBytes { try writer.appendData(offset: 4096, bytes: $0) }
    try writer.appendZero(offset: 65536, length: 65536)
    let big = [UInt8](repeating: 0x5a, count: 512 * 3)
    try big.withUnsafeBytes { try writer.appendData(offset: 262144, bytes: $0) }
    try writer.finish()
    return output
}

@Suite struct ArchiveCodecTests {
    @Test func roundTrip() throws {
        let archive = try sample()
        let reader = try ArchiveReader(input: MemoryArchive(bytes: archive.bytes))
        #expect(reader.header == header())
        var records: [ArchiveRecord] = []
        while let record = try reader.next() { records.append(record) }
        #expect(records.count == 3)
        #expect(records[0].offset == 4096 && records[0].length == 8192)
        if case .data(_, let bytes, _) = records[0] { #expect(bytes.allSatisfy { $0 == 0xab }) }
        #expect(records[1] == .zero(offset: 65536, length: 65536))
        #expect(records[2].offset == 262144 && records[2].length == 1536)
        #expect(reader.summary.dataBytes == 8192 + 1536)
        #expect(reader.summary.archiveBytes == UInt64(archive.bytes.count))
    }

    @Test func largeExtentsAreCutIntoBoundedRecords() throws {
        let output = MemoryArchive()
        let writer = try ArchiveWriter(output: output, header: header(size: 16 << 20))
        let data = [UInt8](repeating: 7, count: Int(ArchiveFormat.maximumDataLength) + 4096)
        try data.withUnsafeBytes { try writer.appendData(offset: 0, bytes: $0) }
        let summary = try writer.finish()
        #expect(summary.dataRecords == 2)
        let verified = try ArchiveReader(input: MemoryArchive(bytes: output.bytes)).verifyAll()
        #expect(verified.dataBytes == UInt64(data.count))
    }

    /// A record sealed apart (as the archiver's reader threads do) is byte for byte the record the
    /// writer makes itself; a seal that does not fit its payload is refused and changes nothing.
    @Test func sealedRecordsAreTheWritersOwn() throws {
        let data = (0..<12288).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        let direct = MemoryArchive()
        let one = try ArchiveWriter(output: direct, header: header())
        try data.withUnsafeBytes { try one.appendData(offset: 8192, bytes: $0) }
        try one.finish()
        let sealed = MemoryArchive()
        let two = try ArchiveWriter(output: sealed, header: header())
        try data.withUnsafeBytes { payload in
            let seal = ArchiveDataSeal(offset: 8192, payload: payload)
            #expect(throws: ArchiveError.self) {
                try two.appendData(sealed: seal, payload: UnsafeRawBufferPointer(rebasing: payload[0..<4096]))
            }
            try two.appendData(sealed: seal, payload: payload)
        }
        try two.finish()
        #expect(direct.bytes == sealed.bytes)
        #expect(try ArchiveReader(input: MemoryArchive(bytes: sealed.bytes)).verifyAll().dataBytes == 12288)
    }

    /// Every single-byte corruption anywhere in the archive is caught (seeded sample of positions).
    @Test(arguments: [1, 2, 3, 4, 5])
    func everyCorruptionIsDetected(seed: UInt64) throws {
        let good = try sample().bytes
        var generator = SeededGenerator(seed: seed)
        for _ in 0..<200 {
            var bad = good
            let position = Int.random(in: 0..<bad.count, using: &generator)
            bad[position] ^= UInt8.random(in: 1...255, using: &generator)
            #expect(throws: ArchiveError.self, "seed \(seed), byte \(position)") {
                _ = try ArchiveReader(input: MemoryArchive(bytes: bad)).verifyAll()
            }
        }
    }

    @Test func truncationAndTrailingBytesAreDetected() throws {
        let good = try sample().bytes
        for cut in [0, 7, 20, 100, good.count / 2, good.count - 1] {
            let error = #expect(throws: ArchiveError.self) {
                _ = try ArchiveReader(input: MemoryArchive(bytes: Array(good.prefix(cut)))).verifyAll()
            }
            #expect(error?.code == .truncated || error?.code == .notAnArchive || error?.code == .corrupt)
        }
        #expect(throws: ArchiveError.self) {
            _ = try ArchiveReader(input: MemoryArchive(bytes: good + [0])).verifyAll()
        }
    }

    /// Version 1 archives (trailer digest over every byte, payloads included) are still read; a version
    /// 2 trailer under a version 1 label is not, so the reader really checks each version's digest.
    @Test func versionOneArchivesStillRead() throws {
        let current = try sample().bytes
        #expect(current[8..<12] == [0, 0, 0, 2])
        let trailerLength = 4 + 16 + ArchiveFormat.digestLength
        var old = current
        old.replaceSubrange(8..<12, with: [0, 0, 0, 1])
        let relabelled = old
        let body = Array(old[..<(old.count - trailerLength)])
        old.replaceSubrange((old.count - ArchiveFormat.digestLength)..., with: Array(SHA256.hash(data: body)))
        let summary = try ArchiveReader(input: MemoryArchive(bytes: old)).verifyAll()
        #expect(summary.dataBytes == 8192 + 1536 && summary.zeroBytes == 65536)
        #expect(throws: ArchiveError.self) { _ = try ArchiveReader(input: MemoryArchive(bytes: relabelled)).verifyAll() }
        var future = current
        future.replaceSubrange(8..<12, with: [0, 0, 0, 3])
        let error = #expect(throws: ArchiveError.self) { _ = try ArchiveReader(input: MemoryArchive(bytes: future)) }
        #expect(error?.code == .notAnArchive)
    }

    /// The trailer chains the records' digests: a whole record cut out, or two records swapped, is
    /// caught even though each record on its own is intact.
    @Test func missingOrReorderedRecordsAreCaught() throws {
        let output = MemoryArchive()
        let writer = try ArchiveWriter(output: output, header: header())
        let one = [UInt8](repeating: 1, count: 4096), two = [UInt8](repeating: 2, count: 4096)
        try one.withUnsafeBytes { try writer.appendData(offset: 0, bytes: $0) }
        try two.withUnsafeBytes { try writer.appendData(offset: 8192, bytes: $0) }
        try writer.finish()
        let recordLength = ArchiveFormat.dataPrefixLength + ArchiveFormat.digestLength + 4096
        let trailerStart = output.bytes.count - (4 + 16 + ArchiveFormat.digestLength)
        let firstStart = trailerStart - 2 * recordLength
        let first = Array(output.bytes[firstStart..<(firstStart + recordLength)])
        let second = Array(output.bytes[(firstStart + recordLength)..<trailerStart])
        var cut = output.bytes
        cut.removeSubrange((firstStart + recordLength)..<trailerStart)
        var swapped = output.bytes
        swapped.replaceSubrange(firstStart..<trailerStart, with: second + first)
        for bad in [cut, swapped] {
            #expect(throws: ArchiveError.self) { _ = try ArchiveReader(input: MemoryArchive(bytes: bad)).verifyAll() }
        }
    }

    @Test func notAnArchive() {
        let error = #expect(throws: ArchiveError.self) {
            _ = try ArchiveReader(input: MemoryArchive(bytes: Array("hello, this is not an archive".utf8)))
        }
        #expect(error?.code == .notAnArchive)
    }

    @Test func writerRefusesBadRecords() throws {
        let writer = try ArchiveWriter(output: MemoryArchive(), header: header(size: 65536))
        let block = [UInt8](repeating: 1, count: 512)
        #expect(throws: ArchiveError.self) { try block.withUnsafeBytes { try writer.appendData(offset: 100, bytes: $0) } }
        #expect(throws: ArchiveError.self) { try block.withUnsafeBytes { try writer.appendData(offset: 65536, bytes: $0) } }
        try block.withUnsafeBytes { try writer.appendData(offset: 4096, bytes: $0) }
        #expect(throws: ArchiveError.self) { try block.withUnsafeBytes { try writer.appendData(offset: 0, bytes: $0) } }
    }

    @Test func chains() throws {
        let full = header(id: "f")
        let first = header(id: "i1", kind: .incremental, base: "f", index: 1)
        let second = header(id: "i2", kind: .incremental, base: "i1", index: 2)
        try ArchiveChain.check([full, first, second])
        try ArchiveChain.check([full])
        for broken in [[first], [full, second], [full, second, first], [full, full]] {
            let error = #expect(throws: ArchiveError.self) { try ArchiveChain.check(broken) }
            #expect(error?.code == .brokenChain)
        }
        let otherSize = header(id: "i1", kind: .incremental, base: "f", index: 1, size: 2 << 20)
        #expect(throws: ArchiveError.self) { try ArchiveChain.check([full, otherSize]) }
    }

    @Test func overlayReplacesCoveredRanges() {
        typealias S = ArchiveImage.Segment
        let base = [S(offset: 0, length: 100, file: 0, position: 1000), S(offset: 200, length: 100, file: 0, position: 2000)]
        let layer = [S(offset: 50, length: 200, file: 1, position: 5000)]
        let result = ArchiveImage.overlay(base, with: layer)
        #expect(result.map(\.offset) == [0, 50, 250])
        #expect(result.map(\.length) == [50, 200, 50])
        #expect(result[2].position == 2050)
    }
}

