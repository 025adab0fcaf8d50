@testable import CairnBackup
import CairnEngine
import Foundation
import Testing

/// Records as daemons before `BackupMachine` wrote them (one flat object, every phase's fields side by
/// side) load into the right case and are written back field for field.
@Suite struct BackupRecordCodingTests {
    /// Fields every record has.
    static let common = """
        "archivePath" : "/srv/b1.cairn", "id" : "b1", "imageVolume" : "backup-b1-image", "method" : "cow",
        "snapshot" : "backup-b1", "startedAt" : "2026-05-01T10:00:00Z", "volume" : "vol", "volumeID" : 3,
        "volumeSize" : 1048576
        """
    static let split = #""splitAt" : "2026-05-01T10:00:01Z", "sessionsAtSplit" : 2"#
    static let frozen = split + #", "drain" : "sealed", "sessionsLeftOnA" : [ "4 10.0.0.1:5000" ]"#
    static let archived = frozen + """
        , "archiveStartedAt" : "2026-05-01T10:00:02Z", "dataBytes" : 4096, "archiveBytes" : 5000, "archiveSeconds" : 1.5
        """
    static let ended = #""finishedAt" : "2026-05-01T10:00:09Z""#

    static func json(_ phase: String, _ fields: String, method: String = "cow") -> Data {
        let common = Self.common.replacingOccurrences(of: #""method" : "cow""#, with: #""method" : "\#(method)""#)
        return Data("{ \(common), \"phase\" : \"\(phase)\"\(fields.isEmpty ? "" : ", " + fields) }".utf8)
    }

    static let t1 = Date(timeIntervalSince1970: 1_777_629_601)
    static let splitState = BackupRecord.Split(at: t1, sessionsOnA: 2)
    static let freezeState = BackupRecord.Freeze(
        split: splitState, drain: "sealed", sessionsLeftOnA: ["4 10.0.0.1:5000"])
    static let archivingState = BackupRecord.Archiving(
        freeze: freezeState, startedAt: t1.addingTimeInterval(1), resumed: false)
    static let archivedState = BackupRecord.Archived(
        archiving: archivingState, dataBytes: 4096, archiveBytes: 5000, seconds: 1.5)
    static let end = t1.addingTimeInterval(8)

    /// Old JSON of every phase, and the state it must load as.
    static let cases: [(String, Data, BackupRecord.State)] = [
        ("establishing", json("establishing", "", method: "mirror"), .running(.splitting)),
        ("draining before T", json("draining", #""jobID" : 5"#), .running(.splitting)),
        ("draining", json("draining", split), .running(.draining(splitState))),
        ("archiving, not started", json("archiving", frozen),
            .running(.archiving(.init(freeze: freezeState, resumed: false)))),
        ("archiving", json("archiving", frozen + #", "archiveStartedAt" : "2026-05-01T10:00:02Z""#),
            .running(.archiving(archivingState))),
        ("archiving, resumed", json("archiving", frozen + #", "resumed" : true"#),
            .running(.archiving(.init(freeze: freezeState, startedAt: nil, resumed: true)))),
        ("discarding", json("discarding", archived), .running(.discarding(archivedState))),
        ("succeeded", json("succeeded", archived + ", " + ended),
            .succeeded(archivedState, .init(at: end, message: nil))),
        ("succeeded, resumed",
            json(
                "succeeded",
                archived + #", "resumed" : true, "# + #""message" : "archive written again after a daemon restart", "#
                    + ended),
            .succeeded(
                .init(archiving: .init(freeze: freezeState, startedAt: t1.addingTimeInterval(1), resumed: true),
                    dataBytes: 4096, archiveBytes: 5000, seconds: 1.5),
                .init(at: end, message: "archive written again after a daemon restart"))),
        ("succeeded without archive seconds",
            json("succeeded", frozen + #", "dataBytes" : 4096, "archiveBytes" : 5000, "# + ended),
            .succeeded(
                .init(archiving: .init(freeze: freezeState, startedAt: nil, resumed: false), dataBytes: 4096,
                    archiveBytes: 5000, seconds: nil),
                .init(at: end, message: nil))),
        ("failed before T", json("failed", #""message" : "no space", "# + ended),
            .failed(.splitting, .init(at: end, message: "no space"))),
        ("failed draining", json("failed", split + #", "message" : "cancelled", "# + ended),
            .failed(.draining(splitState), .init(at: end, message: "cancelled"))),
        ("failed archiving", json("failed", frozen + #", "message" : "disk full", "# + ended),
            .failed(.archiving(.init(freeze: freezeState, resumed: false)), .init(at: end, message: "disk full"))),
        ("failed discarding", json("failed", archived + #", "message" : "merge failed", "# + ended),
            .failed(.discarding(archivedState), .init(at: end, message: "merge failed"))),
    ]

    @Test func oldRecordsOfEveryPhaseLoadIntoTheirCase() throws {
        for (name, data, state) in Self.cases {
            let record = try BackupRecordStore.decode(data)
            #expect(record.state == state, "\(name)")
            #expect(record.volumeID == 3 && record.startedAt == Date(timeIntervalSince1970: 1_777_629_600), "\(name)")
        }
        #expect(Set(Self.cases.map { try! BackupRecordStore.decode($0.1).phase }) == Set(BackupRecord.Phase.allCases))
    }

    /// Written back, a record is the same flat object: an older daemon reads it as it wrote it.
    @Test func recordsAreWrittenFlatFieldForField() throws {
        for (name, data, _) in Self.cases {
            let written = try BackupRecordStore.encode(try BackupRecordStore.decode(data))
            let original = try JSONSerialization.jsonObject(with: data) as! NSDictionary
            let again = try JSONSerialization.jsonObject(with: written) as! NSDictionary
            #expect(original == again, "\(name): \(String(decoding: written, as: UTF8.self))")
        }
    }

    /// A record missing what its phase must have is unreadable, and the store names its file.
    @Test func anUnreadableRecordIsAnErrorNamingTheFile() throws {
        for (name, data) in [
            ("archiving without its drain", Self.json("archiving", Self.split)),
            ("discarding without its sizes", Self.json("discarding", Self.frozen)),
            ("succeeded without an end", Self.json("succeeded", Self.archived)),
            ("draining without its session count", Self.json("draining", #""splitAt" : "2026-05-01T10:00:01Z""#)),
            ("an unknown phase", Self.json("paused", "")),
            ("establishing without the mirror method", Self.json("establishing", "")),
            ("not JSON", Data("{ \"id\" : ".utf8)),
        ] {
            let directory = FileManager.default.temporaryDirectory.path + "/cairn-backup-records-" + UUID().uuidString
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let store = try BackupRecordStore(directory: directory)
            try data.write(to: URL(fileURLWithPath: directory + "/b1.json"))
            do {
                _ = try store.loadAll()
                Issue.record("\(name) loaded")
            } catch let error as EngineError {
                #expect(error.code == .corrupt, "\(name)")
                #expect(error.message.contains(directory + "/b1.json"), "\(name): \(error.message)")
            }
        }
    }
}
