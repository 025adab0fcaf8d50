/// What the metadata store holds of one persisted map, and what the commit in flight is about to make
/// durable. A bit protects a host write only once it is *durably* set: `isDurablySet` is the test the
/// write path uses before letting the write touch the disk (write-intent, like DRBD's activity log).
struct PersistedMap {
    /// The map as of the last successful commit.
    var durable: ExtentMap
    /// Blocks changed in memory since the last commit capture.
    var dirtyBlocks: Set<Int> = []
    /// Blocks (and their words) the commit in progress writes.
    var inCommit: [Int: [UInt64]] = [:]

    init(count: UInt64) { durable = ExtentMap(count: count) }

    /// True when the bit is set in the store and the commit in progress (if any) does not clear it.
    func isDurablySet(_ extent: UInt64) -> Bool {
        guard durable.contains(extent) else { return false }
        guard let words = inCommit[ExtentMap.block(of: extent)] else { return true }
        let local = extent - UInt64(ExtentMap.block(of: extent)) * ExtentMap.extentsPerBlock
        return words[Int(local / 64)] & (1 << (local % 64)) != 0
    }

    mutating func markDirty(_ extent: UInt64) { dirtyBlocks.insert(ExtentMap.block(of: extent)) }

    /// Every block whose stored content may differ from memory (a map replaced wholesale).
    mutating func markAllDirty() {
        for block in 0..<durable.blockCount { dirtyBlocks.insert(block) }
    }

    /// The commit that captured `inCommit` is durable.
    mutating func committed() {
        for (block, words) in inCommit { durable.setBlockWords(block, words) }
        inCommit = [:]
    }
}

/// The clone-group design's COD scoreboard: the extents being copied right now, by the sync engine or the COD engine.
/// Either engine sets an extent's bit before copying it and clears it after, so no extent is copied
/// twice at once and no host write lands in an extent while it is being copied.
struct CODScoreboard {
    private(set) var copying: Set<UInt64> = []

    func contains(_ extent: UInt64) -> Bool { copying.contains(extent) }
    mutating func claim(_ extent: UInt64) { copying.insert(extent) }
    mutating func release(_ extent: UInt64) { copying.remove(extent) }
    var isEmpty: Bool { copying.isEmpty }
}

/// The clone-group design's COD queue: host requests that need extents copied from the clone before they can be
/// processed. A request stays queued while every extent it still needs is already being copied (by the
/// sync engine or another request's COD); it leaves when none of its extents needs copying any more.
/// The requests themselves wait on the pool monitor; the queue records them for status and tests.
struct CopyOnDemandQueue {
    /// Requests queued now.
    private(set) var waiting = 0
    /// Requests that ever had to wait for a COD, and extents the COD engine copied.
    private(set) var requestsQueued: UInt64 = 0
    private(set) var extentsCopied: UInt64 = 0

    mutating func enqueue() {
        waiting += 1
        requestsQueued += 1
    }
    mutating func dequeue() { waiting -= 1 }
    mutating func copied(_ count: Int) { extentsCopied += UInt64(count) }
}

/// A clone's in-memory maps; its state is the group machine's (`CloneGroupMachine`).
final class CloneMember {
    let id: UInt64
    /// Milliseconds since 1970.
    let createdAt: Int64
    /// Extents in which clone and source differ (for a clone being restored: still to copy).
    var delta: ExtentMap
    /// Write-intent extents of a mirrored clone: a mirrored write is in flight there, or was recently.
    /// They are part of the persistent delta map, so a crash between the two halves of a mirrored write
    /// is repaired by copying those extents again at recovery.
    var activity: ExtentMap
    /// Activity extents by last use, to expire the least recently used.
    var activityUse: [UInt64: UInt64] = [:]
    /// The job working on this clone, if any (or the last one).
    var job: UInt64?

    init(id: UInt64, createdAt: Int64, extentCount: UInt64, delta: ExtentMap? = nil) {
        self.id = id
        self.createdAt = createdAt
        self.delta = delta ?? ExtentMap(count: extentCount)
        activity = ExtentMap(count: extentCount)
    }
}

/// A clone group in memory (guarded by the pool mutex): the source, its clones, the persisted maps and
/// the coordination between host I/O and the copy engines.
final class CloneGroupState {
    /// The clones' states and the rules for changing them: only the service changes it, through events.
    var machine: CloneGroupMachine
    let extentCount: UInt64
    /// Clones by volume id: the same clones as the machine's.
    var members: [UInt64: CloneMember] = [:]
    /// The persistent delta map: union of the clones' delta and activity maps.
    var persistentDelta: PersistedMap
    /// The protected restore map while a protected restore runs.
    var restoreMap: ExtentMap?
    var persistentRestoreMap: PersistedMap
    /// Protected-restore bits a host write waits to see durable before it may overwrite an extent whose
    /// restore is already durable (`CloneGroups.commitRestoreIntent`).
    var restoreIntent: Set<UInt64> = []
    var scoreboard = CODScoreboard()
    var codQueue = CopyOnDemandQueue()
    /// Host writes in flight, by extent: the sync engine does not copy an extent a host write is changing.
    var writers: [UInt64: Int] = [:]
    var writesInFlight = 0
    /// Set while a fracture or a membership change waits for writes in flight: new writes wait.
    var barrier = false
    /// The group record (clone list, states) changed since the last commit capture.
    var recordDirty = false
    /// Logical clock for activity-extent use.
    var activityClock: UInt64 = 0
    /// Host requests to the group's volumes so far: the sync engine backs off while this moves.
    var hostRequests: UInt64 = 0

    init(machine: CloneGroupMachine, volumeSize: UInt64) {
        self.machine = machine
        extentCount = (volumeSize + machine.extentSize - 1) / machine.extentSize
        persistentDelta = PersistedMap(count: extentCount)
        persistentRestoreMap = PersistedMap(count: extentCount)
    }

    var sourceID: UInt64 { machine.sourceID }
    var extentSize: UInt64 { machine.extentSize }

    /// Where `member` stands with the source.
    func state(of member: CloneMember) -> CloneState { machine.clones[member.id]! }

    var record: CloneGroupRecord {
        CloneGroupRecord(
            sourceID: sourceID, extentSize: extentSize,
            clones: members.values.map { CloneRecord(volumeID: $0.id, state: state(of: $0), createdAt: $0.createdAt) }
                .sorted { $0.volumeID < $1.volumeID })
    }

    /// The clone being restored into the source (reverse sync or protected restore), if any.
    var restoringMember: (member: CloneMember, state: CloneState)? {
        machine.restoring.map { (members[$0.clone]!, $0.state) }
    }

    /// Whether the persistent delta map must have `extent` set: some clone's delta or activity has it.
    func unionContains(_ extent: UInt64) -> Bool {
        members.values.contains { $0.delta.contains(extent) || $0.activity.contains(extent) }
    }

    /// The persistent delta map's words for one block, computed from the clones' maps.
    func unionWords(ofBlock block: Int) -> [UInt64] {
        var words = [UInt64](repeating: 0, count: persistentDelta.durable.wordRange(ofBlock: block).count)
        for member in members.values {
            for (index, word) in member.delta.blockWords(block).enumerated() { words[index] |= word }
            for (index, word) in member.activity.blockWords(block).enumerated() { words[index] |= word }
        }
        return words
    }

    /// Carries out an action of the machine that touches only this group's maps (monitor held). Returns
    /// false for the others (membership, commits, jobs), which the service carries out.
    func perform(_ action: CloneGroupMachine.Action) -> Bool {
        switch action {
        case .persistRecord:
            recordDirty = true
        case .persistWholeDeltaMap:
            persistentDelta.markAllDirty()
        case .endActivityLog(let clone):
            guard let member = members[clone] else { return true }
            for extent in member.activity.members { persistentDelta.markDirty(extent) }
            member.activity = ExtentMap(count: extentCount)
            member.activityUse = [:]
        case .coverDeltaInOthers(let clone):
            guard let member = members[clone] else { return true }
            for other in members.values where other !== member { other.delta.formUnion(member.delta) }
        case .beginRestoreMap:
            restoreMap = ExtentMap(count: extentCount)
            persistentRestoreMap.markAllDirty()
        case .endRestoreMap(let clone):
            members[clone]?.delta = restoreMap ?? ExtentMap(count: extentCount)
            restoreMap = nil
            restoreIntent = []
            persistentRestoreMap.markAllDirty()
        case .recoverRestoreMap:
            restoreMap = persistentRestoreMap.durable
        case .createMember, .forgetMember, .deleteGroup, .commit, .retry, .startJob:
            return false
        }
        return true
    }

    func extents(offset: UInt64, length: UInt64) -> ClosedRange<UInt64> {
        (offset / extentSize)...((offset + length - 1) / extentSize)
    }

    var isDirty: Bool {
        recordDirty || !persistentDelta.dirtyBlocks.isEmpty || !persistentRestoreMap.dirtyBlocks.isEmpty
    }
}

/// Every clone group of the pool, with the lookups the data path needs (in `PoolState`).
struct CloneGroupTable {
    /// Groups by source volume id.
    var groups: [UInt64: CloneGroupState] = [:]
    /// Clone volume id → source volume id.
    var sourceOfClone: [UInt64: UInt64] = [:]
    /// Groups deleted since the last commit capture (their last clone was removed).
    var deleted: Set<UInt64> = []

    /// The group `volumeID` belongs to, as source or as clone.
    func group(containing volumeID: UInt64) -> CloneGroupState? {
        groups[volumeID] ?? sourceOfClone[volumeID].flatMap { groups[$0] }
    }

    var isDirty: Bool { !deleted.isEmpty || groups.values.contains { $0.isDirty } }
}
