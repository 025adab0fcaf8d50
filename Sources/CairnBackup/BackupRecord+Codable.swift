import Foundation

/// The record on disk is the flat object every earlier daemon wrote: one `phase` string and the fields
/// of every phase side by side, absent where not yet known. It is still written that way, field for
/// field, so a daemon downgraded after a crash can read the records and recover its backups (a record
/// it cannot read stops it from starting). Reading maps the flat fields to the phase's case, and refuses
/// a record missing what its phase must have.
extension BackupRecord: Codable {
    enum CodingKeys: String, CodingKey {
        case id, volume, volumeID, volumeSize, method, archivePath, baseArchiveID, baseChainIndex, baseSnapshot
        case phase, snapshot, imageVolume, drainTimeoutSeconds, startedAt, splitAt, finishedAt, drain
        case sessionsAtSplit, sessionsLeftOnA, message, dataBytes, archiveBytes, archiveSeconds, archiveStartedAt
        case jobID, resumed
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let method = try c.decode(BackupMethod.self, forKey: .method)
        let phase = try c.decode(Phase.self, forKey: .phase)
        let state: State
        switch phase {
        case .establishing:
            state = .running(.splitting)
        case .draining:
            // Before the split of a cow or log backup the record already said draining, without T.
            state = .running(c.contains(.splitAt) ? .draining(try Self.split(c)) : .splitting)
        case .archiving:
            state = .running(.archiving(try Self.archiving(c)))
        case .discarding:
            state = .running(.discarding(try Self.archived(c)))
        case .succeeded:
            state = .succeeded(try Self.archived(c), try Self.ending(c))
        case .failed:
            // The stage it stopped in is the furthest one whose fields it has.
            let stage: Stage =
                if c.contains(.dataBytes) { .discarding(try Self.archived(c)) }
                else if c.contains(.drain) { .archiving(try Self.archiving(c)) }
                else if c.contains(.splitAt) { .draining(try Self.split(c)) }
                else { .splitting }
            state = .failed(stage, try Self.ending(c))
        }
        self.init(
            id: try c.decode(String.self, forKey: .id), volume: try c.decode(String.self, forKey: .volume),
            volumeID: try c.decode(UInt64.self, forKey: .volumeID),
            volumeSize: try c.decode(UInt64.self, forKey: .volumeSize), method: method,
            archivePath: try c.decode(String.self, forKey: .archivePath),
            baseArchiveID: try c.decodeIfPresent(String.self, forKey: .baseArchiveID),
            baseChainIndex: try c.decodeIfPresent(UInt32.self, forKey: .baseChainIndex),
            baseSnapshot: try c.decodeIfPresent(String.self, forKey: .baseSnapshot),
            snapshot: try c.decode(String.self, forKey: .snapshot),
            imageVolume: try c.decode(String.self, forKey: .imageVolume),
            drainTimeoutSeconds: try c.decodeIfPresent(Double.self, forKey: .drainTimeoutSeconds),
            startedAt: try c.decode(Date.self, forKey: .startedAt),
            jobID: try c.decodeIfPresent(UInt64.self, forKey: .jobID), state: state)
        guard self.phase == phase else {
            throw DecodingError.dataCorrupted(
                .init(
                    codingPath: [CodingKeys.phase],
                    debugDescription: "phase \(phase.rawValue) with method \(method.rawValue)"))
        }
    }

    private typealias Container = KeyedDecodingContainer<CodingKeys>

    private static func split(_ c: Container) throws -> Split {
        Split(
            at: try c.decode(Date.self, forKey: .splitAt),
            sessionsOnA: try c.decode(Int.self, forKey: .sessionsAtSplit))
    }

    private static func archiving(_ c: Container) throws -> Archiving {
        let freeze = Freeze(
            split: try split(c), drain: try c.decode(String.self, forKey: .drain),
            sessionsLeftOnA: try c.decode([String].self, forKey: .sessionsLeftOnA))
        return Archiving(
            freeze: freeze, startedAt: try c.decodeIfPresent(Date.self, forKey: .archiveStartedAt),
            resumed: try c.decodeIfPresent(Bool.self, forKey: .resumed) ?? false)
    }

    private static func archived(_ c: Container) throws -> Archived {
        Archived(
            archiving: try archiving(c), dataBytes: try c.decode(UInt64.self, forKey: .dataBytes),
            archiveBytes: try c.decode(UInt64.self, forKey: .archiveBytes),
            seconds: try c.decodeIfPresent(Double.self, forKey: .archiveSeconds))
    }

    private static func ending(_ c: Container) throws -> Ending {
        Ending(
            at: try c.decode(Date.self, forKey: .finishedAt),
            message: try c.decodeIfPresent(String.self, forKey: .message))
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(id, forKey: .id)
        try c.encode(volume, forKey: .volume)
        try c.encode(volumeID, forKey: .volumeID)
        try c.encode(volumeSize, forKey: .volumeSize)
        try c.encode(method, forKey: .method)
        try c.encode(archivePath, forKey: .archivePath)
        try c.encodeIfPresent(baseArchiveID, forKey: .baseArchiveID)
        try c.encodeIfPresent(baseChainIndex, forKey: .baseChainIndex)
        try c.encodeIfPresent(baseSnapshot, forKey: .baseSnapshot)
        try c.encode(phase, forKey: .phase)
        try c.encode(snapshot, forKey: .snapshot)
        try c.encode(imageVolume, forKey: .imageVolume)
        try c.encodeIfPresent(drainTimeoutSeconds, forKey: .drainTimeoutSeconds)
        try c.encode(startedAt, forKey: .startedAt)
        try c.encodeIfPresent(splitAt, forKey: .splitAt)
        try c.encodeIfPresent(finishedAt, forKey: .finishedAt)
        try c.encodeIfPresent(drain, forKey: .drain)
        try c.encodeIfPresent(sessionsAtSplit, forKey: .sessionsAtSplit)
        try c.encodeIfPresent(sessionsLeftOnA, forKey: .sessionsLeftOnA)
        try c.encodeIfPresent(message, forKey: .message)
        try c.encodeIfPresent(dataBytes, forKey: .dataBytes)
        try c.encodeIfPresent(archiveBytes, forKey: .archiveBytes)
        try c.encodeIfPresent(archiveSeconds, forKey: .archiveSeconds)
        try c.encodeIfPresent(archiveStartedAt, forKey: .archiveStartedAt)
        try c.encodeIfPresent(jobID, forKey: .jobID)
        try c.encodeIfPresent(resumed, forKey: .resumed)
    }
}
