import CairnIO

extension Pool {
    /// Copies `[offset, offset + length)` of one volume onto the same range of another (same size), inside
    /// the engine: data runs are written, holes are zeroed (deallocated), so a thin target stays thin. The
    /// clone groups' copy engines and COPY_AND_WRITE / EXTENDED COPY mirroring use it.
    func copyRange(from: UInt64, to: UInt64, offset: UInt64, length: UInt64) throws {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: Int(length), alignment: 4096)
        defer { buffer.deallocate() }
        for piece in try readVolumeData(volumeID: from, offset: offset, into: buffer) {
            if piece.isHole {
                try discard(volumeID: to, offset: piece.offset, length: piece.length, mode: .zero, fua: false, limit: nil)
            } else {
                let start = Int(piece.offset - offset)
                let bytes = UnsafeRawBufferPointer(rebasing: buffer[start..<(start + Int(piece.length))])
                try write(volumeID: to, offset: piece.offset, source: .bytes(bytes), fua: false, end: nil)
            }
        }
    }
}
