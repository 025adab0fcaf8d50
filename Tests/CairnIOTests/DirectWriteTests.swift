@_spi(Testing) import CairnIO
import Glibc
import Foundation
import Testing

@Suite struct DirectWriteTests {
    /// A file on the repository's filesystem (ext4 here) writes whole blocks with O_DIRECT, from an
    /// aligned buffer, from an unaligned one (through `DirectBuffers`) and with RWF_DSYNC, partial blocks
    /// through the page cache, and reads back every byte whatever path wrote it.
    @Test func directAndBufferedWritesMixOnOneFile() throws {
        let directory = FileManager.default.currentDirectoryPath + "/.build/direct-io-test-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let file = try PosixStorageFile(path: directory + "/slots.dat", create: true, direct: true)
        try #require(file.writeMode == .direct, "this filesystem refused O_DIRECT; the test needs one that allows it")
        var expected = [UInt8](repeating: 0, count: 64 << 10)
        func put(_ bytes: [UInt8], at offset: Int, durably: Bool = false) throws {
            try bytes.withUnsafeBytes {
                durably ? try file.writeDurably($0, at: UInt64(offset)) : try file.write($0, at: UInt64(offset))
            }
            expected.replaceSubrange(offset..<(offset + bytes.count), with: bytes)
        }
        try file.preallocate(at: 0, length: 64 << 10)
        // Whole blocks from an unaligned buffer: one byte into an allocation.
        let unaligned = [UInt8](repeating: 0, count: 8193)
        var source = (0..<8192).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 1) }
        try unaligned.withUnsafeBytes { raw in
            let base = UnsafeMutableRawPointer(mutating: raw.baseAddress! + 1)
            base.copyMemory(from: source, byteCount: source.count)
            try file.write(UnsafeRawBufferPointer(start: base, count: 8192), at: 4096)
        }
        expected.replaceSubrange(4096..<12288, with: source)
        // Whole blocks from an aligned buffer, durably.
        source = (0..<4096).map { UInt8(truncatingIfNeeded: $0 &* 3 &+ 5) }
        let aligned = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 4096)
        defer { aligned.deallocate() }
        aligned.copyMemory(from: UnsafeRawBufferPointer(start: source, count: 4096))
        try file.writeDurably(UnsafeRawBufferPointer(aligned), at: 16384)
        expected.replaceSubrange(16384..<20480, with: source)
        // A partial block over a direct one, then a direct block over a buffered partial one.
        try put([UInt8](repeating: 0xAB, count: 100), at: 4096 + 50)
        try put([UInt8](repeating: 0xCD, count: 4096), at: 20480 + 4096)
        try put([UInt8](repeating: 0xEF, count: 10), at: 20480 + 4096 + 7)
        try put([UInt8](repeating: 0x11, count: 4096), at: 20480 + 4096)
        try file.sync()
        #expect(file.writeMode == .direct)
        var back = [UInt8](repeating: 0xEE, count: expected.count)
        try back.withUnsafeMutableBytes { try file.read(into: $0, at: 0) }
        #expect(back == expected)
    }

    /// A filesystem that refuses O_DIRECT at open (EINVAL, as tmpfs did before Linux 6.6): the file
    /// falls back to the page cache for good and says so; any other error fails the open.
    @Test func refusedDirectIOFallsBackToBufferedWrites() throws {
        let path = NSTemporaryDirectory() + "cairn-direct-test-" + UUID().uuidString
        defer { unlink(path) }
        #expect(throws: IOError.self) {
            try PosixStorageFile(path: path, create: true, direct: true, writeThrough: false) { _ in -EIO }
        }
        let file = try PosixStorageFile(path: path, create: true, direct: true, writeThrough: false) { _ in -EINVAL }
        #expect(file.writeMode == .directRefused)
        let bytes = [UInt8](repeating: 0x5A, count: 4096)
        try bytes.withUnsafeBytes { try file.write($0, at: 0) }
        try file.sync()
        var back = [UInt8](repeating: 0, count: 4096)
        try back.withUnsafeMutableBytes { try file.read(into: $0, at: 0) }
        #expect(back == bytes)
        #expect(try PosixStorageFile(path: path, create: true).writeMode == .buffered)
    }
}
