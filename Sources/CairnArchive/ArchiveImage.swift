import Glibc

/// A volume image assembled from an archive chain without unpacking it: an index of which archive
/// bytes hold each range of the volume, built by reading (and so verifying) the chain once. Reads
/// then come straight from the archive files. What `cairn backup export` serves over NBD.
public final class ArchiveImage: @unchecked Sendable {
    // @unchecked: immutable after init; pread needs no shared position.
    /// A range of the volume and where its bytes are (`file` nil: zeros).
    struct Segment {
        var offset: UInt64
        var length: UInt64
        var file: Int?
        var position: UInt64
    }

    public let header: ArchiveHeader
    public var size: UInt64 { header.volumeSize }
    private let descriptors: [Int32]
    /// Sorted, non-overlapping; gaps read as zeros.
    private let segments: [Segment]

    /// Reads and checks `paths` (a full archive, then its increments in order) and indexes them.
    public init(paths: [String]) throws {
        var headers: [ArchiveHeader] = []
        var segments: [Segment] = []
        var descriptors: [Int32] = []
        for (index, path) in paths.enumerated() {
            let reader = try ArchiveReader(input: try FileArchiveInput(path: path), name: path)
            headers.append(reader.header)
            var layer: [Segment] = []
            while let record = try reader.next() {
                switch record {
                case .data(let offset, let bytes, let position):
                    layer.append(Segment(offset: offset, length: UInt64(bytes.count), file: index, position: position))
                case .zero(let offset, let length):
                    layer.append(Segment(offset: offset, length: length, file: nil, position: 0))
                }
            }
            segments = Self.overlay(segments, with: layer)
            let fd = open(path, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { throw ArchiveError(.io, "cannot open \(path)") }
            descriptors.append(fd)
        }
        try ArchiveChain.check(headers)
        header = headers.last!
        self.segments = segments
        self.descriptors = descriptors
    }

    deinit { for fd in descriptors { close(fd) } }

    /// `base` with `layer`'s ranges replacing whatever they cover (both sorted, non-overlapping).
    static func overlay(_ base: [Segment], with layer: [Segment]) -> [Segment] {
        guard !layer.isEmpty else { return base }
        var result = layer
        var cursor = 0
        for segment in base {
            var remaining: Segment? = segment
            // Layer segments that end before this one starts can never overlap a later one either.
            while cursor < layer.count, layer[cursor].offset + layer[cursor].length <= segment.offset { cursor += 1 }
            var index = cursor
            while var piece = remaining, index < layer.count, layer[index].offset < piece.offset + piece.length {
                let cover = layer[index]
                if cover.offset > piece.offset {
                    var before = piece
                    before.length = cover.offset - piece.offset
                    result.append(before)
                }
                let coverEnd = cover.offset + cover.length
                if coverEnd < piece.offset + piece.length {
                    let skip = max(coverEnd, piece.offset) - piece.offset
                    piece.offset += skip
                    piece.length -= skip
                    if piece.file != nil { piece.position += skip }
                    remaining = piece
                } else {
                    remaining = nil
                }
                index += 1
            }
            if let remaining { result.append(remaining) }
        }
        return result.sorted { $0.offset < $1.offset }
    }

    /// Reads `buffer.count` bytes at `offset` (zeros where the chain recorded nothing).
    public func read(offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
        buffer.initializeMemory(as: UInt8.self, repeating: 0)
        let end = offset + UInt64(buffer.count)
        // First segment that ends after `offset`.
        var low = 0
        var high = segments.count
        while low < high {
            let mid = (low + high) / 2
            if segments[mid].offset + segments[mid].length <= offset { low = mid + 1 } else { high = mid }
        }
        var index = low
        while index < segments.count, segments[index].offset < end {
            let segment = segments[index]
            index += 1
            guard let file = segment.file else { continue }
            let start = max(offset, segment.offset)
            let stop = min(end, segment.offset + segment.length)
            var done: UInt64 = 0
            while start + done < stop {
                let target = buffer.baseAddress! + Int(start + done - offset)
                let n = pread(
                    descriptors[file], target, Int(stop - start - done),
                    off_t(segment.position + (start - segment.offset) + done))
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else { throw ArchiveError(.io, "cannot read archive data at \(segment.position)") }
                done += UInt64(n)
            }
        }
    }

    /// Ranges that hold recorded data, as (offset, length, isData) covering `[offset, offset + length)`.
    public func extents(offset: UInt64, length: UInt64) -> [(length: UInt64, isData: Bool)] {
        var result: [(length: UInt64, isData: Bool)] = []
        var position = offset
        let end = offset + length
        func add(_ length: UInt64, _ data: Bool) {
            guard length > 0 else { return }
            if let last = result.last, last.isData == data {
                result[result.count - 1].length += length
            } else {
                result.append((length: length, isData: data))
            }
        }
        for segment in segments where segment.offset + segment.length > position && segment.offset < end {
            if segment.offset > position { add(segment.offset - position, false) }
            let stop = min(end, segment.offset + segment.length)
            add(stop - max(position, segment.offset), segment.file != nil)
            position = stop
        }
        add(end - position, false)
        return result
    }
}
