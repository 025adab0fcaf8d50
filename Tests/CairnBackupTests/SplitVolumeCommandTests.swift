import CairnBackup
import CairnEngine
import CairnTestSupport
import Foundation
import Testing

/// COPY_AND_WRITE and `base:allocation` on a volume a backup splits: each session gets its
/// image's answer, and an old session's copy reaches B byte for byte.
@Suite("COPY_AND_WRITE and block status on a split volume")
struct SplitVolumeCommandTests {
    static let chunk: UInt64 = 64 << 10

    /// A pool with volume "v" (1 MiB, 64 KiB chunks) and a backup coordinator.
    static func withPool(_ body: (Pool, BackupCoordinator, UInt64, String) throws -> Void) throws {
        let fixture = try BackupTestPool()
        defer { fixture.close() }
        let (directory, pool, coordinator) = (fixture.directory, fixture.pool, fixture.coordinator)
        let volume = try pool.volumes.create(name: "v", size: 1 << 20, chunkSize: UInt32(chunk))
        try body(pool, coordinator, volume.id, directory)
    }

    static func bytes(_ pattern: [(Int, UInt8)], count: Int = Int(chunk)) -> [UInt8] {
        var result = [UInt8](repeating: 0, count: count)
        var start = 0
        for (end, value) in pattern {
            for i in start..<end { result[i] = value }
            start = end
        }
        return result
    }

    @Test(arguments: BackupMethod.allCases)
    func copyAndWriteFollowsTheSessionsImage(method: BackupMethod) throws {
        try Self.withPool { pool, coordinator, volumeID, directory in
            let c = Self.chunk
            try writeBytes(pool, volumeID, 0, [UInt8](repeating: 0x11, count: Int(c)))
            let old = TestSession(id: 1, pool: pool, volumeID: volumeID, coordinator: coordinator)
            let started = try startSplit(
                coordinator, BackupRequest(volume: "v", archivePath: directory + "/a.cbk", method: method))
            let new = TestSession(id: 2, pool: pool, volumeID: volumeID, coordinator: coordinator)
            // B changes the source after T: A's copy must still carry A's source, in both images.
            try new.write(8192, [UInt8](repeating: 0x55, count: 4096))

            try old.copyAndWrite(source: 0, target: 4 * c, buffer: [UInt8](repeating: 0xA1, count: 4096), bufferOffset: 4096)
            let fromA = Self.bytes([(4096, 0x11), (8192, 0xA1), (Int(c), 0x11)])
            #expect(try old.read(4 * c, Int(c)) == fromA, "A reads its copy")
            #expect(try new.read(4 * c, Int(c)) == fromA, "A's copy reaches B byte for byte")

            // Unaligned (log: 1 KiB into a 4 KiB entry) and covering buffers, from B's own source.
            try new.copyAndWrite(source: 0, target: 6 * c, buffer: [UInt8](repeating: 0xB2, count: 1024), bufferOffset: 512)
            let fromB = Self.bytes([(512, 0x11), (1536, 0xB2), (8192, 0x11), (12288, 0x55), (Int(c), 0x11)])
            #expect(try new.read(6 * c, Int(c)) == fromB, "B copies B's source")
            #expect(try old.read(6 * c, Int(c)) == [UInt8](repeating: 0, count: Int(c)), "A never sees B's copy")

            // Bad arguments change nothing, on either side.
            for session in [old, new] {
                #expect(throws: EngineError.self) {
                    try session.copyAndWrite(source: 0, target: 7 * c, buffer: [1], bufferOffset: 0, copySize: 4096)
                }
                #expect(throws: EngineError.self) {
                    try session.copyAndWrite(source: 100, target: 7 * c, buffer: [1], bufferOffset: 0)
                }
                #expect(throws: EngineError.self) {
                    try session.copyAndWrite(source: 0, target: 1 << 20, buffer: [1], bufferOffset: 0)
                }
                #expect(throws: EngineError.self) {
                    try session.copyAndWrite(source: 0, target: 7 * c, buffer: [1, 2], bufferOffset: UInt32(c) - 1)
                }
            }
            #expect(try new.read(7 * c, Int(c)) == [UInt8](repeating: 0, count: Int(c)))
            #expect(try old.read(7 * c, Int(c)) == [UInt8](repeating: 0, count: Int(c)))
            #expect(coordinator.route(volumeID: volumeID).mirror?.locks.isIdle == true)

            old.close()
            let record = try waitForBackup(coordinator, started.record.id)
            #expect(record.phase == .succeeded, "\(record.message ?? "")")
            new.close()
            _ = try BackupRestorer(pool: pool).restore(paths: [directory + "/a.cbk"], to: "r", force: false)
            let r = try pool.volumes.id(named: "r")
            #expect(try readBytes(pool, r, 0, Int(c)) == [UInt8](repeating: 0x11, count: Int(c)), "A's source")
            #expect(try readBytes(pool, r, 4 * c, Int(c)) == fromA)
            #expect(try readBytes(pool, r, 6 * c, Int(c)) == [UInt8](repeating: 0, count: Int(c)))
            #expect(try readBytes(pool, volumeID, 4 * c, Int(c)) == fromA, "the volume keeps both copies")
            #expect(try readBytes(pool, volumeID, 6 * c, Int(c)) == fromB)
        }
    }

    /// The blocks the log method's journal at `path` holds (big-endian u64s).
    static func journaled(_ path: String) -> Set<UInt64> {
        let bytes = [UInt8]((try? Data(contentsOf: URL(fileURLWithPath: path))) ?? Data())
        return Set(stride(from: 0, to: bytes.count / 8 * 8, by: 8).map { start in
            bytes[start..<start + 8].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        })
    }

    @Test("log: a FUA write by B journals the entries it adds, and one an earlier write added")
    func logFUAJournalsItsEntries() throws {
        try Self.withPool { pool, coordinator, volumeID, directory in
            let old = TestSession(id: 1, pool: pool, volumeID: volumeID, coordinator: coordinator)
            let started = try startSplit(
                coordinator, BackupRequest(volume: "v", archivePath: directory + "/a.cbk", method: .log))
            let journal = directory + "/pool/backups/\(started.record.id).log-table"
            let new = TestSession(id: 2, pool: pool, volumeID: volumeID, coordinator: coordinator)
            try new.write(64 << 10, [UInt8](repeating: 1, count: 4096))
            #expect(!Self.journaled(journal).contains(16), "no FLUSH yet")
            // The entry exists already: B's FUA write lives only in the log, so the entry must be durable.
            try new.writeFUA(64 << 10, [UInt8](repeating: 2, count: 4096))
            #expect(Self.journaled(journal).contains(16))
            try new.writeFUA(128 << 10, [UInt8](repeating: 3, count: 8192))
            #expect(Self.journaled(journal).isSuperset(of: [32, 33]))
            // An A write's FUA needs no journal: the volume has it whatever the log says.
            try old.writeFUA(256 << 10, [UInt8](repeating: 4, count: 4096))
            #expect(try new.read(256 << 10, 4096) == [UInt8](repeating: 4, count: 4096))
            old.close()
            #expect(try waitForBackup(coordinator, started.record.id).phase == .succeeded)
            new.close()
            #expect(try readBytes(pool, volumeID, 64 << 10, 4096) == [UInt8](repeating: 2, count: 4096))
        }
    }

    /// Data in the first 256 KiB, then a split with one old session (A) and one new (B); B writes at
    /// 512 KiB and trims the first 64 KiB, A writes at 768 KiB.
    static func splitWithKnownWrites(
        _ pool: Pool, _ coordinator: BackupCoordinator, _ volumeID: UInt64, _ directory: String, _ method: BackupMethod
    ) throws -> (old: TestSession, new: TestSession, started: BackupStatus) {
        try writeBytes(pool, volumeID, 0, [UInt8](repeating: 1, count: 256 << 10))
        let old = TestSession(id: 1, pool: pool, volumeID: volumeID, coordinator: coordinator)
        let started = try startSplit(
            coordinator, BackupRequest(volume: "v", archivePath: directory + "/a.cbk", method: method))
        let new = TestSession(id: 2, pool: pool, volumeID: volumeID, coordinator: coordinator)
        try new.write(512 << 10, [UInt8](repeating: 2, count: 4096))
        try new.trim(0, 64 << 10)
        try old.write(768 << 10, [UInt8](repeating: 3, count: 4096))
        return (old, new, started)
    }

    /// True where `extents` (starting at `offset`) mark `position` as a hole.
    static func isHole(_ extents: [AllocationExtent], from offset: UInt64, at position: UInt64) -> Bool? {
        var start = offset
        for extent in extents {
            if position < start + extent.length { return extent.isHole }
            start += extent.length
        }
        return nil
    }

    @Test(arguments: BackupMethod.allCases, [UInt64(1), 2])
    func allocationIsWhatTheSessionsImageReads(method: BackupMethod, seed: UInt64) throws {
        try Self.withPool { pool, coordinator, volumeID, directory in
            let size: UInt64 = 1 << 20
            let (old, new, started) = try Self.splitWithKnownWrites(pool, coordinator, volumeID, directory, method)
            // Then random writes and trims of both sessions (replay with the seed).
            var random = SeededGenerator(seed: seed)
            for _ in 0..<40 {
                let session = Bool.random(using: &random) ? old : new
                let offset = UInt64.random(in: 0..<size / 4096, using: &random) * 4096
                let length = UInt64.random(in: 1...8, using: &random) * 4096
                let clipped = min(length, size - offset)
                if UInt64.random(in: 0..<3, using: &random) == 0 {
                    try session.trim(offset, clipped)
                } else {
                    try session.write(offset, [UInt8](repeating: 9, count: Int(clipped)))
                }
            }
            for (session, name) in [(old, "A"), (new, "B")] {
                let extents = try session.allocation(0, size)
                #expect(extents.reduce(0) { $0 + $1.length } == size, "seed \(seed) \(name): \(extents)")
                // Sound: a hole reads as zeros in that session's image.
                let image = try session.read(0, Int(size))
                for block in 0..<size / 4096 where Self.isHole(extents, from: 0, at: block * 4096) == true {
                    let range = Int(block * 4096)..<Int(block * 4096 + 4096)
                    #expect(image[range].allSatisfy { $0 == 0 }, "seed \(seed) \(name): hole at \(block * 4096) holds data")
                }
                // An answer that starts mid-range and is cut short still starts at its offset.
                let one = try session.allocation(4096, size, maximumExtents: 1)
                #expect(one.count == 1)
                #expect(throws: EngineError.self) { try session.allocation(size, 4096) }
            }
            old.close()
            #expect(try waitForBackup(coordinator, started.record.id).phase == .succeeded)
            new.close()
        }
    }

    @Test(arguments: BackupMethod.allCases)
    func allocationTellsTheImagesApart(method: BackupMethod) throws {
        try Self.withPool { pool, coordinator, volumeID, directory in
            let size: UInt64 = 1 << 20
            let (old, new, started) = try Self.splitWithKnownWrites(pool, coordinator, volumeID, directory, method)
            let a = try old.allocation(0, size)
            let b = try new.allocation(0, size)
            #expect(Self.isHole(a, from: 0, at: 0) == false, "A keeps what B trimmed: \(a)")
            #expect(Self.isHole(b, from: 0, at: 0) == true, "B trimmed it: \(b)")
            #expect(Self.isHole(b, from: 0, at: 64 << 10) == false)
            #expect(Self.isHole(a, from: 0, at: 512 << 10) == true, "B's write is not in A")
            #expect(Self.isHole(b, from: 0, at: 512 << 10) == false)
            #expect(Self.isHole(b, from: 0, at: (512 << 10) + 4096) == true)
            #expect(Self.isHole(a, from: 0, at: 768 << 10) == false, "A's write is in both")
            #expect(Self.isHole(b, from: 0, at: 768 << 10) == false)
            #expect(Self.isHole(a, from: 0, at: 900 << 10) == true && Self.isHole(b, from: 0, at: 900 << 10) == true)
            old.close()
            #expect(try waitForBackup(coordinator, started.record.id).phase == .succeeded)
            new.close()
        }
    }
}
