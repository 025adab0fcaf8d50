import CairnIO
import CairnTestSupport
import Foundation
import InteropSupport
import Testing

/// A fresh directory under the system temp dir, removed by the caller.
func temporaryDirectory() -> String {
    let path = NSTemporaryDirectory() + "cairn-io-test-" + UUID().uuidString
    try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

@Suite struct AtomicFileTests {
    @Test func replaceWritesAndOverwritesLeavingNoTemporaryFile() throws {
        let directory = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/record.json"
        try AtomicFile.replace(path, with: Array("one".utf8))
        try AtomicFile.replace(path, with: Array("two".utf8))
        #expect(try PosixFileSystem().contents(of: path) == Array("two".utf8))
        #expect(try PosixFileSystem().names(in: directory) == ["record.json"])
    }

    @Test func createRefusesAnExistingFileAndChangesNothing() throws {
        let directory = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/token"
        try AtomicFile.create(path, with: Array("first".utf8))
        let error = #expect(throws: IOError.self) { try AtomicFile.create(path, with: Array("second".utf8)) }
        #expect(error?.errno == EEXIST)
        #expect(try PosixFileSystem().contents(of: path) == Array("first".utf8))
        #expect(try PosixFileSystem().names(in: directory) == ["token"])
        var st = stat()
        #expect(stat(path, &st) == 0 && st.st_mode & 0o777 == 0o600)
    }

    /// Writers of one file never share a temporary file: every replace succeeds and the file holds one
    /// writer's whole contents.
    @Test func concurrentReplacesOfOneFileAllSucceed() async throws {
        let directory = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/shared.json"
        let writers = 8
        try await withThrowingTaskGroup(of: Void.self) { group in
            for writer in 0..<writers {
                group.addTask {
                    for round in 0..<20 {
                        try AtomicFile.replace(path, with: Array(repeating: UInt8(writer), count: 1000 + round))
                    }
                }
            }
            try await group.waitForAll()
        }
        let bytes = try #require(try PosixFileSystem().contents(of: path))
        #expect(bytes.count >= 1000 && Set(bytes).count == 1)
        #expect(try PosixFileSystem().names(in: directory) == ["shared.json"])
    }

    @Test func leftoversOfACrashAreRemoved() throws {
        let directory = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        FileManager.default.createFile(atPath: directory + "/a.json.tmp.123.4", contents: Data([1]))
        FileManager.default.createFile(atPath: directory + "/a.json", contents: Data([2]))
        try AtomicFile.removeLeftovers(in: directory)
        #expect(try PosixFileSystem().names(in: directory) == ["a.json"])
    }

    /// Power cuts at every call of a sequence of replaces: the file always holds exactly the last
    /// acknowledged contents or the one being written, never a mix, never nothing once one was
    /// acknowledged.
    @Test(arguments: [UInt64(1), 2, 3, 4]) func powerCutDuringReplaceKeepsOldOrNew(seed: UInt64) throws {
        print("seed \(seed)")
        let versions = (0..<4).map { [UInt8](repeating: UInt8($0 + 1), count: 700 * ($0 + 1)) }
        let callsPerReplace = 6
        for cut in 0..<(versions.count * callsPerReplace) {
            let fileSystem = SimulatedFileSystem()
            try fileSystem.makeDirectory("/pool")
            fileSystem.armPowerCut(afterCalls: cut + 1, seed: seed &* 1000 &+ UInt64(cut))
            var acknowledged: [UInt8]?
            var attempted: [[UInt8]?] = []
            for version in versions {
                if fileSystem.powerCutImage == nil { attempted = [acknowledged, version] }
                try AtomicFile.replace("/pool/r.json", with: version, in: fileSystem)
                if fileSystem.powerCutImage == nil { acknowledged = version }
            }
            guard let image = fileSystem.powerCutImage else { continue }
            let survived = try image.contents(of: "/pool/r.json")
            #expect(attempted.contains(survived), "cut \(cut): \(survived?.count ?? -1) bytes")
        }
    }
}
