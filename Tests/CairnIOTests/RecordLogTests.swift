import CairnIO
import CairnTestSupport
import Foundation
import InteropSupport
import Testing

@Suite struct RecordLogTests {
    private func records(_ count: Int, from first: Int = 0) -> [[UInt8]] {
        (first..<(first + count)).map { [UInt8](repeating: UInt8(truncatingIfNeeded: $0), count: 3 + $0 % 50) }
    }

    @Test func appendedRecordsReadBackAfterReopening() throws {
        let directory = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/journal"
        let log = try RecordLog(path: path)
        #expect(log.opened.records.isEmpty)
        try log.append(records(3))
        try log.append(records(2, from: 3) + [[]])
        let reopened = try RecordLog(path: path)
        #expect(reopened.opened.records == records(5) + [[]])
        #expect(reopened.opened.truncatedAt == nil)
    }

    /// A torn last append (short, or zeros where the size grew but the data did not land) is reported
    /// as "truncated at record N" and cut off, so the next append follows the last good record.
    @Test(arguments: [false, true]) func tornTailIsReportedAndCutOff(zeros: Bool) throws {
        let directory = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/journal"
        try RecordLog(path: path).append(records(4))
        let handle = try #require(FileHandle(forUpdatingAtPath: path))
        let good = try handle.seekToEnd()
        if zeros {
            try handle.write(contentsOf: Data(count: 40))
        } else {
            try handle.write(contentsOf: Data([20, 0, 0, 0, 1, 2, 3, 4, 5]))
        }
        try handle.close()
        let log = try RecordLog(path: path)
        #expect(log.opened.records == records(4))
        #expect(log.opened.truncatedAt == 4)
        #expect(log.opened.validLength == good)
        try log.append(records(1, from: 9))
        #expect(try RecordLog.read(path)?.records == records(4) + records(1, from: 9))
    }

    @Test func damagedRecordInTheMiddleIsAnErrorNamingTheFile() throws {
        let directory = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/journal"
        try RecordLog(path: path).append(records(3))
        var bytes = try #require(try PosixFileSystem().contents(of: path))
        bytes[8 + 3 + 8 + 1] ^= 0x40  // a payload byte of record 1
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        let error = #expect(throws: RecordLog.DamageError.self) { _ = try RecordLog.read(path) }
        #expect(error?.record == 1)
        #expect(error?.description.contains(path) == true)
        #expect(throws: RecordLog.DamageError.self) { _ = try RecordLog(path: path) }
    }

    /// Linux reports a failed writeback once; an append after it would sync "successfully" over the
    /// lost record. The log refuses every append after the first failure.
    @Test func failedSyncIsFinal() throws {
        let fileSystem = SimulatedFileSystem()
        try fileSystem.makeDirectory("/pool")
        let log = try RecordLog(path: "/pool/journal", in: fileSystem)
        try log.append(records(1))
        try #require(fileSystem.file(at: "/pool/journal")).failNextSyncs()
        let first = #expect(throws: IOError.self) { try log.append(records(1, from: 1)) }
        #expect(first?.path == "/pool/journal" && first?.operation == "fdatasync")
        #expect(throws: IOError.self) { try log.append(records(1, from: 2)) }
    }

    /// Power cuts at every call while appending: every acknowledged record survives, in order; of the
    /// append in progress a prefix of its records may survive; reopening never fails.
    @Test(arguments: [UInt64(5), 6, 7]) func powerCutKeepsEveryAcknowledgedRecord(seed: UInt64) throws {
        print("seed \(seed)")
        let batches = (0..<6).map { records(1 + $0 % 3, from: $0 * 10) }
        for cut in 0..<(batches.count * 2 + 4) {
            let fileSystem = SimulatedFileSystem()
            try fileSystem.makeDirectory("/pool")
            fileSystem.armPowerCut(afterCalls: cut + 1, seed: seed &* 1000 &+ UInt64(cut))
            let log = try RecordLog(path: "/pool/journal", in: fileSystem)
            var acknowledged: [[UInt8]] = []
            var inFlight: [[UInt8]] = []
            for batch in batches {
                if fileSystem.powerCutImage == nil { inFlight = batch }
                try log.append(batch)
                if fileSystem.powerCutImage == nil { acknowledged += batch }
            }
            guard let image = fileSystem.powerCutImage else { continue }
            let survived = try RecordLog(path: "/pool/journal", in: image).opened.records
            #expect(survived.starts(with: acknowledged) && (acknowledged + inFlight).starts(with: survived), "cut \(cut)")
        }
    }
}
