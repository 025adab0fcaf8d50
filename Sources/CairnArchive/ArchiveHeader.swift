import Foundation

/// What an archive holds, written first as JSON so that any tool (and a person with `head -c`) can
/// tell what it is looking at.
public struct ArchiveHeader: Codable, Sendable, Hashable {
    /// A full archive holds every allocated extent; an incremental one holds what changed since `base`.
    public enum Kind: String, Codable, Sendable {
        case full
        case incremental
    }

    /// Always "cairn-backup".
    public var format: String
    /// Unique id of this archive; incremental archives name their base by it.
    public var archiveID: String
    public var kind: Kind
    /// The archive this one is an increment of (nil for a full archive).
    public var baseArchiveID: String?
    /// 0 for a full archive, base's index + 1 for an increment.
    public var chainIndex: UInt32
    /// Volume the image was taken of, and its size in bytes at the split.
    public var volume: String
    public var volumeSize: UInt64
    /// Engine chunk size of the volume (restore creates new volumes with it).
    public var chunkSize: UInt32?
    /// One-way mirror method used: mirror, log or cow.
    public var method: String
    /// The split time T (ISO 8601): the image holds every session open at T to its end, none opened later.
    public var splitAt: String
    /// How image A stopped changing: "drained" (every old session closed), "sealed", "timeout".
    public var drain: String
    /// Sessions that were open at T (and so wrote into the image).
    public var sessionsAtSplit: Int
    /// Always "sha256".
    public var checksum: String

    public init(
        archiveID: String, kind: Kind, baseArchiveID: String?, chainIndex: UInt32, volume: String, volumeSize: UInt64,
        chunkSize: UInt32?, method: String, splitAt: String, drain: String, sessionsAtSplit: Int
    ) {
        self.format = "cairn-backup"
        self.archiveID = archiveID
        self.kind = kind
        self.baseArchiveID = baseArchiveID
        self.chainIndex = chainIndex
        self.volume = volume
        self.volumeSize = volumeSize
        self.chunkSize = chunkSize
        self.method = method
        self.splitAt = splitAt
        self.drain = drain
        self.sessionsAtSplit = sessionsAtSplit
        self.checksum = "sha256"
    }

    func encoded() throws -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return Array(try encoder.encode(self))
    }

    static func decode(_ bytes: [UInt8]) throws -> ArchiveHeader {
        let header: ArchiveHeader
        do {
            header = try JSONDecoder().decode(ArchiveHeader.self, from: Data(bytes))
        } catch {
            throw ArchiveError(.corrupt, "the archive header is not valid JSON: \(error)")
        }
        guard header.format == "cairn-backup", header.checksum == "sha256" else {
            throw ArchiveError(.notAnArchive, "the header says format '\(header.format)', not cairn-backup")
        }
        guard header.volumeSize % ArchiveFormat.sectorSize == 0 else {
            throw ArchiveError(.corrupt, "the header's volume size \(header.volumeSize) is not a whole number of sectors")
        }
        guard (header.kind == .full) == (header.baseArchiveID == nil), (header.kind == .full) == (header.chainIndex == 0)
        else {
            throw ArchiveError(.corrupt, "the header's kind, base and chain index disagree")
        }
        return header
    }
}
