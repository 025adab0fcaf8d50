import CairnIO
import Foundation
import ISCSIProtocol
import ISCSIServer

/// The iSCSI reservations that must survive a restart (APTPL), in one small file of the data directory
/// (`iscsi-reservations.json`), replaced atomically and synced with its directory on every change. On a
/// pool in RADOS the file stays on this node: a node that takes the pool over starts without them.
struct ISCSIReservationFile: ISCSIReservationStore {
    let path: String

    static func path(dataDirectory: String) -> String { dataDirectory + "/iscsi-reservations.json" }

    private struct Contents: Codable {
        /// By logical unit identifier (`VolumeLogicalUnit.identifier`).
        var units: [String: SCSIReservations.Persistent]
    }

    func save(_ units: [UInt64: SCSIReservations.Persistent]) throws {
        let contents = Contents(units: Dictionary(uniqueKeysWithValues: units.map { (String($0.key), $0.value) }))
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        try AtomicFile.replace(path, with: Array(try encoder.encode(contents)))
    }

    /// What the file holds (nothing when there is no file); an unreadable file is an error naming it.
    func load() throws -> [UInt64: SCSIReservations.Persistent] {
        guard FileManager.default.fileExists(atPath: path) else { return [:] }
        do {
            let contents = try JSONDecoder().decode(Contents.self, from: Data(contentsOf: URL(fileURLWithPath: path)))
            var units: [UInt64: SCSIReservations.Persistent] = [:]
            for (key, value) in contents.units {
                guard let identifier = UInt64(key) else { throw CocoaError(.coderInvalidValue) }
                units[identifier] = value
            }
            return units
        } catch {
            throw ISCSIReservationFileError(description: "cannot read the iSCSI reservations in \(path): \(error)")
        }
    }
}

struct ISCSIReservationFileError: Error, CustomStringConvertible {
    var description: String
}
