import Crypto
import Foundation

/// What a finished (or verified) archive holds.
public struct ArchiveSummary: Sendable, Hashable {
    public var header: ArchiveHeader
    /// DATA and ZERO records.
    public var dataRecords: UInt64
    public var zeroRecords: UInt64
    /// Bytes of volume data carried, and bytes recorded as zeros.
    public var dataBytes: UInt64
    public var zeroBytes: UInt64
    /// Size of the archive stream itself.
    public var archiveBytes: UInt64
}

/// Writes an archive front to back (never seeking, so the output may be a pipe). Records must come in
/// ascending, non-overlapping order inside the volume: a reader checks that too, and it lets a restore
/// apply an archive as it streams.
public final class ArchiveWriter {
    public let header: ArchiveHeader
    private let output: any ArchiveOutput
    /// Digest of every byte written so far except DATA payloads (the trailer carries it).
    private var stream = SHA256()
    private var nextOffset: UInt64 = 0
    private var summary: ArchiveSummary
    private var finished = false

    public init(output: any ArchiveOutput, header: ArchiveHeader) throws {
        self.output = output
        self.header = header
        summary = ArchiveSummary(
            header: header, dataRecords: 0, zeroRecords: 0, dataBytes: 0, zeroBytes: 0, archiveBytes: 0)
        let json = try header.encoded()
        var preamble = ArchiveFormat.magic
        preamble.appendBigEndian(ArchiveFormat.version)
        preamble.appendBigEndian(UInt32(json.count))
        preamble.append(contentsOf: json)
        preamble.append(contentsOf: SHA256.hash(data: json))
        try emit(preamble)
    }

    /// Records `bytes` as the volume's data at `offset`, cut into records of at most
    /// `ArchiveFormat.maximumDataLength`.
    public func appendData(offset: UInt64, bytes: UnsafeRawBufferPointer) throws {
        try checkRange(offset: offset, length: UInt64(bytes.count))
        var done = 0
        while done < bytes.count {
            let length = min(bytes.count - done, Int(ArchiveFormat.maximumDataLength))
            let piece = UnsafeRawBufferPointer(rebasing: bytes[done..<done + length])
            try emitRecord(ArchiveDataSeal(offset: offset + UInt64(done), payload: piece), payload: piece)
            done += length
        }
    }

    /// Records `payload` as one DATA record whose prefix and checksum were computed beforehand (on
    /// another thread). The seal must be the one of exactly this offset and payload length; the payload
    /// itself is not hashed again here, which is the point.
    public func appendData(sealed seal: ArchiveDataSeal, payload: UnsafeRawBufferPointer) throws {
        guard seal.length == payload.count, payload.count <= Int(ArchiveFormat.maximumDataLength) else {
            throw ArchiveError(
                .invalidArgument, "a sealed record of \(seal.length) bytes was given \(payload.count) bytes of payload")
        }
        try checkRange(offset: seal.offset, length: UInt64(payload.count))
        try emitRecord(seal, payload: payload)
    }

    private func emitRecord(_ seal: ArchiveDataSeal, payload: UnsafeRawBufferPointer) throws {
        try emit(seal.prefix)
        // Covered by the record's digest in the prefix, which the stream digest covers: not hashed again.
        try emit(payload, hashed: false)
        summary.dataRecords += 1
        summary.dataBytes += UInt64(payload.count)
        nextOffset = seal.offset + UInt64(payload.count)
    }

    /// Records that `[offset, offset + length)` reads as zeros.
    public func appendZero(offset: UInt64, length: UInt64) throws {
        try checkRange(offset: offset, length: length)
        var record = ArchiveRecordTag.zero.bytes
        record.appendBigEndian(offset)
        record.appendBigEndian(length)
        record.append(contentsOf: SHA256.hash(data: record))
        try emit(record)
        summary.zeroRecords += 1
        summary.zeroBytes += length
        nextOffset = offset + length
    }

    /// Writes the trailer and hands everything to the output (durable, for a file).
    @discardableResult
    public func finish() throws -> ArchiveSummary {
        precondition(!finished, "an archive is finished once")
        var trailer = ArchiveRecordTag.end.bytes
        trailer.appendBigEndian(summary.dataRecords + summary.zeroRecords)
        trailer.appendBigEndian(summary.dataBytes)
        trailer.append(contentsOf: stream.finalize())
        try trailer.withUnsafeBytes { try output.write($0) }
        summary.archiveBytes += UInt64(trailer.count)
        try output.finish()
        finished = true
        return summary
    }

    private func checkRange(offset: UInt64, length: UInt64) throws {
        let sector = ArchiveFormat.sectorSize
        guard length > 0, offset % sector == 0, length % sector == 0 else {
            throw ArchiveError(.invalidArgument, "record \(offset)+\(length) is empty or not sector-aligned")
        }
        guard offset >= nextOffset else {
            throw ArchiveError(.invalidArgument, "record at \(offset) is before the end of the previous one (\(nextOffset))")
        }
        guard offset <= header.volumeSize, length <= header.volumeSize - offset else {
            throw ArchiveError(.invalidArgument, "record \(offset)+\(length) reaches past the volume's end")
        }
    }

    private func emit(_ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { try emit($0) }
    }

    private func emit(_ bytes: UnsafeRawBufferPointer, hashed: Bool = true) throws {
        if hashed { stream.update(bufferPointer: bytes) }
        try output.write(bytes)
        summary.archiveBytes += UInt64(bytes.count)
    }
}

extension Array where Element == UInt8 {
    mutating func appendBigEndian<T: FixedWidthInteger>(_ value: T) {
        Swift.withUnsafeBytes(of: value.bigEndian) { append(contentsOf: $0) }
    }
}

extension ArraySlice where Element == UInt8 {
    func bigEndian<T: FixedWidthInteger>(at index: Int, as type: T.Type) -> T {
        var value: T = 0
        for byte in self[(startIndex + index)..<(startIndex + index + MemoryLayout<T>.size)] {
            value = value << 8 | T(byte)
        }
        return value
    }
}
