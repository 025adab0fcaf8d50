import CairnIO
import Foundation
import Testing

@testable import CairnReplication

/// Target records as earlier versions wrote them (flags, optional ones absent when unset) load into the
/// state they describe, are written back in the same form, and a combination no version writes is an
/// error naming the file.
@Suite("mirror target record on disk")
struct TargetRecordCompatibilityTests {
    static func json(_ flags: String) -> String {
        #"{"generation":5,"pairID":12,"primaryNode":"alpha","volumeID":3,"# + flags + "}"
    }

    /// Each record as the flag-based target wrote it, and the state it means.
    static let written: [(String, TargetMirrorState)] = [
        (#""modified":false,"severed":false"#, .mirroring),
        (#""modified":false,"severed":true"#, .severed(modified: false)),
        (#""modified":true,"severed":true"#, .severed(modified: true)),
        (
            #""modified":false,"promoted":true,"promotedGeneration":171,"severed":true"#,
            .promoted(generation: 171, modified: false)
        ),
        (
            #""modified":true,"promoted":true,"promotedGeneration":171,"severed":true"#,
            .promoted(generation: 171, modified: true)
        ),
        (#""modified":true,"severed":false,"takeInProgress":true"#, .takingChanges),
        (
            #""modified":true,"severed":true,"takeInProgress":true"#,
            .takeInterrupted(promotedGeneration: nil, writtenDuringTake: false)
        ),
        (
            #""modified":true,"severed":true,"takeInProgress":true,"writtenDuringTake":true"#,
            .takeInterrupted(promotedGeneration: nil, writtenDuringTake: true)
        ),
        (
            #""modified":true,"promoted":true,"promotedGeneration":171,"severed":true,"takeInProgress":true"#,
            .takeInterrupted(promotedGeneration: 171, writtenDuringTake: false)
        ),
        (
            #""modified":true,"promoted":true,"promotedGeneration":171,"severed":true,"takeInProgress":true,"writtenDuringTake":true"#,
            .takeInterrupted(promotedGeneration: 171, writtenDuringTake: true)
        ),
    ]

    final class Directory {
        let path = NSTemporaryDirectory() + "cairn-target-records-\(UUID().uuidString)"
        let store: MirrorRecordStore
        init() throws {
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
            store = try MirrorRecordStore(dataDirectory: path)
        }
        deinit { try? FileManager.default.removeItem(atPath: path) }

        func load(_ text: String) throws -> TargetMirrorRecord {
            let file = store.targetPath(3)
            try Data(text.utf8).write(to: URL(fileURLWithPath: file))
            return try store.load(TargetMirrorRecord.self, from: file)
        }
    }

    @Test("records written by the flag-based target load into their state and are written back the same")
    func flagRecordsLoad() throws {
        let directory = try Directory()
        for (flags, state) in Self.written {
            let record = try directory.load(Self.json(flags))
            #expect(record.state == state, "\(flags)")
            #expect(
                record.volumeID == 3 && record.pairID == 12 && record.generation == 5 && record.primaryNode == "alpha")
            // Saved again, it is the same flags (an earlier version reads it back unchanged).
            let saved = try JSONSerialization.jsonObject(with: JSONEncoder().encode(record)) as? NSDictionary
            let original = try JSONSerialization.jsonObject(with: Data(Self.json(flags).utf8)) as? NSDictionary
            #expect(saved != nil && saved == original, "\(flags)")
        }
    }

    @Test("the optional flags written as false load like absent ones, pretty-printed as the store writes")
    func explicitFalse() throws {
        let directory = try Directory()
        let record = try directory.load(
            """
            {
              "generation" : 5,
              "modified" : false,
              "pairID" : 12,
              "primaryNode" : "alpha",
              "promoted" : false,
              "severed" : true,
              "takeInProgress" : false,
              "volumeID" : 3,
              "writtenDuringTake" : false
            }
            """)
        #expect(record.state == .severed(modified: false))
    }

    @Test("flags no version writes, and damaged records, are errors naming the file")
    func impossibleFlags() throws {
        let directory = try Directory()
        let impossible = [
            // Modified while paired and read-only, with no take keeping the changes.
            #""modified":true,"severed":false"#,
            // Promoted without a generation, or without the sever promotion implies.
            #""modified":false,"promoted":true,"severed":true"#,
            #""modified":false,"promoted":true,"promotedGeneration":171,"severed":false"#,
            // A take keeps the target's changes: it is modified.
            #""modified":false,"severed":false,"takeInProgress":true"#,
            // Written during a take without one, or while read-only.
            #""modified":true,"severed":true,"writtenDuringTake":true"#,
            #""modified":true,"severed":false,"takeInProgress":true,"writtenDuringTake":true"#,
            // Missing a flag every version writes.
            #""severed":true"#,
        ]
        for flags in impossible {
            #expect(throws: ReplicationError.self, "\(flags)") { try directory.load(Self.json(flags)) }
            do {
                _ = try directory.load(Self.json(flags))
            } catch let error as ReplicationError {
                #expect(error.code == .corrupt)
                #expect(error.message.contains(directory.store.targetPath(3)), "\(error.message)")
            }
        }
        #expect(throws: ReplicationError.self) { try directory.load("{\"volumeID\": 3, ") }
    }
}
