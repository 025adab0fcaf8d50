import Crypto
import Foundation

/// One record of an archive, in volume coordinates.
public enum ArchiveRecord: Sendable, Hashable {
    /// `bytes` are the volume's data at `offset`; `position` is where they start in the archive stream
    /// (so an index can read them again without decoding the archive).
    case data(offset: UInt64, bytes: [UInt8], position: UInt64)
    case zero(offset: UInt64, length: UInt64)

    public var offset: UInt64 {
        switch self {
        case .data(let offset, _, _), .zero(let offset, _): offset
        }
    }

    public var length: UInt64 {
        switch self {
        case .data(_, let bytes, _): UInt64(bytes.count)
        case .zero(_, let length): length
        }
    }
}

/// Reads an archive front to back, checking everything on the way: the preamble, the header's digest,
/// each record's digest, order and bounds, and at the end the trailer's counts and stream digest.
/// Any mismatch is an `ArchiveError`; `next()` returns nil only after a trailer that checks out.
public final class ArchiveReader {
    public let header: ArchiveHeader
    private let input: any ArchiveInput
    private let name: String
    private var stream = SHA256()
    /// Bytes consumed so far.
    public private(set) var position: UInt64 = 0
    private var nextOffset: UInt64 = 0
    private var records: UInt64 = 0
    private var dataBytes: UInt64 = 0
    private var zeroBytes: UInt64 = 0
    private var dataRecords: UInt64 = 0
    private var zeroRecords: UInt64 = 0
    private var ended = false
    /// Version 1's trailer digest also covers DATA payloads; version 2's chains the records' digests.
    private let streamCoversPayloads: Bool

    /// Reads and checks the preamble and header. `name` appears in error messages.
    public init(input: any ArchiveInput, name: String = "the archive") throws {
        self.input = input
        self.name = name
        var reading = StreamReading(input: input, name: name)
        let magic = try reading.upTo(ArchiveFormat.magic.count)
        guard Array(magic) == ArchiveFormat.magic else {
            throw ArchiveError(.notAnArchive, "\(name) is not a cairn backup archive (no CAIRNBAK magic)")
        }
        let preamble = magic + (try reading.exactly(ArchiveFormat.preambleLength - magic.count, what: "preamble"))
        let version = preamble.bigEndian(at: 8, as: UInt32.self)
        guard ArchiveFormat.readableVersions.contains(version) else {
            throw ArchiveError(
                .notAnArchive,
                "\(name) has format version \(version); this cairn reads versions \(ArchiveFormat.readableVersions.lowerBound)-\(ArchiveFormat.readableVersions.upperBound)")
        }
        streamCoversPayloads = version == 1
        let length = preamble.bigEndian(at: 12, as: UInt32.self)
        guard length > 0, length <= ArchiveFormat.maximumHeaderLength else {
            throw ArchiveError(.corrupt, "\(name) has a header length of \(length) bytes")
        }
        let json = try reading.exactly(Int(length), what: "header")
        let digest = try reading.exactly(ArchiveFormat.digestLength, what: "header checksum")
        guard Array(SHA256.hash(data: Array(json))) == Array(digest) else {
            throw ArchiveError(.corrupt, "\(name): the header's checksum does not match")
        }
        header = try ArchiveHeader.decode(Array(json))
        for piece in [preamble, json, digest] { stream.update(data: Array(piece)) }
        position = UInt64(preamble.count + json.count + digest.count)
    }

    /// The next record, or nil once the trailer has been read and checked.
    public func next() throws -> ArchiveRecord? {
        guard !ended else { return nil }
        var reading = StreamReading(input: input, name: name)
        let tagBytes = try reading.exactly(4, what: "record tag at byte \(position)")
        guard let tag = ArchiveRecordTag(bytes: tagBytes) else {
            throw ArchiveError(.corrupt, "\(name): unknown record tag at byte \(position)")
        }
        switch tag {
        case .data:
            let rest = try reading.exactly(12 + ArchiveFormat.digestLength, what: "DATA record at byte \(position)")
            let prefix = Array(tagBytes) + Array(rest.prefix(12))
            let offset = rest.bigEndian(at: 0, as: UInt64.self)
            let length = rest.bigEndian(at: 8, as: UInt32.self)
            guard length <= ArchiveFormat.maximumDataLength else {
                throw ArchiveError(.corrupt, "\(name): DATA record at byte \(position) claims \(length) bytes")
            }
            try checkRange(offset: offset, length: UInt64(length))
            let payload = try reading.exactly(Int(length), what: "DATA payload at byte \(position)")
            var digest = SHA256()
            digest.update(data: prefix)
            digest.update(data: Array(payload))
            guard Array(digest.finalize()) == Array(rest.suffix(ArchiveFormat.digestLength)) else {
                throw ArchiveError(
                    .corrupt, "\(name): checksum mismatch in the DATA record for volume bytes \(offset)+\(length)")
            }
            consume(prefix + Array(rest.suffix(ArchiveFormat.digestLength)))
            let payloadPosition = position
            consume(Array(payload), hashed: streamCoversPayloads)
            records += 1
            dataRecords += 1
            dataBytes += UInt64(length)
            nextOffset = offset + UInt64(length)
            return .data(offset: offset, bytes: Array(payload), position: payloadPosition)
        case .zero:
            let rest = try reading.exactly(16 + ArchiveFormat.digestLength, what: "ZERO record at byte \(position)")
            let prefix = Array(tagBytes) + Array(rest.prefix(16))
            guard Array(SHA256.hash(data: prefix)) == Array(rest.suffix(ArchiveFormat.digestLength)) else {
                throw ArchiveError(.corrupt, "\(name): checksum mismatch in the ZERO record at byte \(position)")
            }
            let offset = rest.bigEndian(at: 0, as: UInt64.self)
            let length = rest.bigEndian(at: 8, as: UInt64.self)
            try checkRange(offset: offset, length: length)
            consume(prefix + Array(rest.suffix(ArchiveFormat.digestLength)))
            records += 1
            zeroRecords += 1
            zeroBytes += length
            nextOffset = offset + length
            return .zero(offset: offset, length: length)
        case .end:
            let rest = try reading.exactly(16 + ArchiveFormat.digestLength, what: "trailer")
            let expected = Array(stream.finalize())
            guard rest.bigEndian(at: 0, as: UInt64.self) == records, rest.bigEndian(at: 8, as: UInt64.self) == dataBytes
            else {
                throw ArchiveError(.corrupt, "\(name): the trailer's counts do not match the records read (records lost?)")
            }
            guard Array(rest.suffix(ArchiveFormat.digestLength)) == expected else {
                throw ArchiveError(.corrupt, "\(name): the archive checksum in the trailer does not match")
            }
            position += UInt64(4 + rest.count)
            var probe = [UInt8](repeating: 0, count: 1)
            let extra = try probe.withUnsafeMutableBytes { try input.read(into: $0) }
            guard extra == 0 else { throw ArchiveError(.corrupt, "\(name): bytes follow the trailer") }
            ended = true
            return nil
        }
    }

    /// Reads every record, checking all of it; what a verify reports.
    public func verifyAll() throws -> ArchiveSummary {
        while try next() != nil {}
        return summary
    }

    /// Totals so far (final once `next()` returned nil).
    public var summary: ArchiveSummary {
        ArchiveSummary(
            header: header, dataRecords: dataRecords, zeroRecords: zeroRecords, dataBytes: dataBytes,
            zeroBytes: zeroBytes, archiveBytes: position)
    }

    private func consume(_ bytes: [UInt8], hashed: Bool = true) {
        if hashed { stream.update(data: bytes) }
        position += UInt64(bytes.count)
    }

    private func checkRange(offset: UInt64, length: UInt64) throws {
        let sector = ArchiveFormat.sectorSize
        guard length > 0, offset % sector == 0, length % sector == 0, offset >= nextOffset,
            offset <= header.volumeSize, length <= header.volumeSize - offset
        else {
            throw ArchiveError(
                .corrupt, "\(name): record \(offset)+\(length) is out of order, unaligned or past the volume's end")
        }
    }
}

/// Exact-length reads from an input: a short read at the end of the stream is a truncated archive.
private struct StreamReading {
    let input: any ArchiveInput
    let name: String

    /// At most `count` bytes: fewer only at the end of the stream.
    func upTo(_ count: Int) throws -> ArraySlice<UInt8> {
        var bytes = [UInt8](repeating: 0, count: count)
        var done = 0
        while done < count {
            let n = try bytes.withUnsafeMutableBytes { raw in
                try input.read(into: UnsafeMutableRawBufferPointer(rebasing: raw[done...]))
            }
            if n == 0 { break }
            done += n
        }
        return bytes[0..<done]
    }

    func exactly(_ count: Int, what: String) throws -> ArraySlice<UInt8> {
        var bytes = [UInt8](repeating: 0, count: count)
        var done = 0
        while done < count {
            let n = try bytes.withUnsafeMutableBytes { raw in
                try input.read(into: UnsafeMutableRawBufferPointer(rebasing: raw[done...]))
            }
            if n == 0 { throw ArchiveError(.truncated, "\(name) ends in the middle of its \(what)") }
            done += n
        }
        return bytes[...]
    }
}
