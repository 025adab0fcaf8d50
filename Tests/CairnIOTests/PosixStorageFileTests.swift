import CairnIO
import CairnTestSupport
import Foundation
import Testing

@Suite struct PosixStorageFileTests {
    private func withFile(_ body: (PosixStorageFile, String) throws -> Void) throws {
        let directory = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try body(try PosixStorageFile(path: directory + "/slots.dat", create: true), directory)
    }

    private func read(_ file: any StorageFile, _ offset: UInt64, _ count: Int) throws -> [UInt8] {
        var bytes = [UInt8](repeating: 0xEE, count: count)
        try bytes.withUnsafeMutableBytes { try file.read(into: $0, at: offset) }
        return bytes
    }

    @Test func writeSyncAndReadPastTheEnd() throws {
        try withFile { file, _ in
            let data = [UInt8](repeating: 7, count: 8192)
            try data.withUnsafeBytes { try file.write($0, at: 4096) }
            try file.sync()
            #expect(try file.size() == 12288)
            #expect(try read(file, 4096, 8192) == data)
            #expect(try read(file, 12288, 100) == [UInt8](repeating: 0, count: 100))
        }
    }

    /// RWF_DSYNC where the kernel has it; the write + fdatasync fallback otherwise: the bytes land
    /// either way.
    @Test func durableWriteLands() throws {
        try withFile { file, path in
            let data = [UInt8](repeating: 9, count: 4096)
            try data.withUnsafeBytes { try file.writeDurably($0, at: 0) }
            try data.withUnsafeBytes { try file.writeDurably($0, at: 8192) }
            #expect(try read(file, 8192, 4096) == data)
            #expect(try PosixFileSystem().contents(of: path + "/slots.dat")?.count == 12288)
        }
    }

    /// Without RWF_DSYNC (a kernel before 4.7 answers EOPNOTSUPP and the capability latches off) a
    /// durable write is pwrite + fdatasync: same bytes, same file.
    @Test func durableWriteFallbackLands() throws {
        try withFile { file, directory in
            file.disableDsyncWrites()
            let data = [UInt8](repeating: 5, count: 8192)
            try data.withUnsafeBytes { try file.writeDurably($0, at: 4096) }
            #expect(try read(file, 4096, 8192) == data)
            let other = try PosixStorageFile(path: directory + "/slots.dat")
            #expect(try read(other, 4096, 8192) == data)
        }
    }

    /// Every copy method gives the same bytes: reflink (or its latched fallback), copy_file_range
    /// once reflink is disabled, userspace once both are, and userspace from a non-POSIX source.
    @Test func copyFallbacksGiveTheSameBytes() throws {
        try withFile { file, directory in
            let data = (0..<65536).map { UInt8(truncatingIfNeeded: $0 &* 13) }
            try data.withUnsafeBytes { try file.write($0, at: 0) }
            let first = try file.copy(from: file, at: 0, to: 65536, length: 65536)
            #expect(try read(file, 65536, 65536) == data)
            file.disableReflink()
            #expect(file.preferredCopyMethod != .reflink)
            let second = try file.copy(from: file, at: 0, to: 131072, length: 65536)
            #expect(second != .reflink)
            #expect(try read(file, 131072, 65536) == data)
            file.disableCopyFileRange()
            #expect(try file.copy(from: file, at: 0, to: 196608, length: 65536) == .userspace)
            #expect(try read(file, 196608, 65536) == data)
            let simulated = SimulatedStorageFile(path: "sim", durable: data)
            #expect(try file.copy(from: simulated, at: 4096, to: 262144, length: 8192) == .userspace)
            #expect(try read(file, 262144, 8192) == Array(data[4096..<12288]))
            print("copy methods here: \(first), \(second)")
            _ = directory
        }
    }

    @Test func zeroRangeAndPunchHoleReadAsZeros() throws {
        try withFile { file, _ in
            let data = [UInt8](repeating: 3, count: 16384)
            try data.withUnsafeBytes { try file.write($0, at: 0) }
            try file.punchHole(at: 0, length: 4096)
            try file.zeroRange(at: 8192, length: 4096)
            #expect(try read(file, 0, 4096) == [UInt8](repeating: 0, count: 4096))
            #expect(try read(file, 4096, 4096) == [UInt8](repeating: 3, count: 4096))
            #expect(try read(file, 8192, 4096) == [UInt8](repeating: 0, count: 4096))
            #expect(try file.size() == 16384)
        }
    }

    @Test func errorsNameTheCallAndTheFile() throws {
        let error = #expect(throws: IOError.self) { _ = try PosixStorageFile(path: "/nonexistent-dir/slots.dat") }
        #expect(error?.kind == .notFound)
        #expect(error?.description.contains("open /nonexistent-dir/slots.dat") == true)
    }

    /// The simulated file's report-once fault: the failed sync loses the data on the "disk" though
    /// reads return it, and the next sync succeeds without bringing it back.
    @Test func simulatedSyncFaultReportsOnce() throws {
        let file = SimulatedStorageFile(path: "sim")
        try [UInt8](repeating: 1, count: 512).withUnsafeBytes { try file.write($0, at: 0) }
        file.failNextSyncs()
        #expect(throws: IOError.self) { try file.sync() }
        try file.sync()
        #expect(try read(file, 0, 512) == [UInt8](repeating: 1, count: 512))
        #expect(file.hasLostWrites)
        var random = SystemRandomNumberGenerator()
        #expect(file.crashImage(using: &random).allSatisfy { $0 == 0 })
    }
}
