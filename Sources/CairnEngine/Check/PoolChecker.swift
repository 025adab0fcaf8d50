import CairnIO
import Logging

/// What `cairn pool check` found.
public struct PoolCheckReport: Sendable, Hashable {
    public var volumes = 0
    public var snapshots = 0
    public var mappings = 0
    public var referencedSlots = 0
    /// Unreferenced slots that still occupy disk space (space not yet given back).
    public var leakedSlots = 0
    public var leakedBytes: UInt64 = 0
    /// Leaked slots whose space was given back because `repair` was set.
    public var repairedSlots = 0
    /// Broken invariants; empty means the pool is consistent.
    public var errors: [String] = []

    public var isHealthy: Bool { errors.isEmpty }
}

/// `pool.checker`: `cairn pool check`. Reads the committed metadata back and checks it on its own
/// (structure, references, slot bounds), against the maps and reference counts in memory, and the slot
/// files' free lists against the space they hold. Owns no state; changes nothing unless asked to repair
/// leaked space.
///
/// Core calls it uses: `flush()`, `metadata.integrityCheck()` and `metadata.load`, `monitor` and `state`
/// (maps, `refcount`, allocators: `claimIfReusable`/`abandon` around a punch), and the slot `files`.
public final class PoolChecker: Sendable {
    unowned let pool: Pool

    init(pool: Pool) { self.pool = pool }

    /// Most errors listed in one report: a badly broken pool would otherwise produce millions of lines.
    static let maximumReportedErrors = 100

    /// Commits, then verifies the committed metadata on its own (structure, references, slot bounds), that
    /// it matches the in-memory state, and that no unreferenced slot still holds space. With `repair`,
    /// leaked space is punched out; nothing else is changed.
    public func check(repair: Bool = false) throws -> PoolCheckReport {
        try pool.flush()
        var report = PoolCheckReport()
        func problem(_ text: String) {
            if report.errors.count < Self.maximumReportedErrors { report.errors.append(text) }
        }
        for line in try pool.metadata.integrityCheck() { problem(line) }

        var rows: [ChunkKey: [ChunkVersion]] = [:]
        let catalog = try pool.metadata.load { row in
            rows[ChunkKey(volume: row.volumeID, chunk: row.chunk), default: []].append(row.version)
        }
        report.volumes = catalog.volumes.count
        report.snapshots = catalog.snapshots.count
        report.mappings = rows.values.reduce(0) { $0 + $1.count }
        let slotFiles = Dictionary(uniqueKeysWithValues: catalog.slotFiles.map { ($0.id, $0) })
        let volumes = Dictionary(uniqueKeysWithValues: catalog.volumes.map { ($0.id, $0) })
        let snapshotsByVolume = Dictionary(grouping: catalog.snapshots, by: \.volumeID)

        for volume in catalog.volumes {
            let snaps = snapshotsByVolume[volume.id] ?? []
            for snapshot in snaps where snapshot.epoch >= volume.epoch {
                problem("snapshot \(volume.name)@\(snapshot.name) has epoch \(snapshot.epoch) >= volume epoch \(volume.epoch)")
            }
            if let parent = volume.parent {
                if volumes[parent.volumeID] == nil {
                    problem("clone \(volume.name) refers to missing volume \(parent.volumeID)")
                } else if !(snapshotsByVolume[parent.volumeID] ?? []).contains(where: { $0.epoch == parent.epoch }) {
                    problem("clone \(volume.name) refers to a missing snapshot (epoch \(parent.epoch))")
                }
            }
            if !slotFiles.values.contains(where: { $0.chunkSize == volume.chunkSize }) {
                problem("volume \(volume.name) has no slot file for chunk size \(volume.chunkSize)")
            }
        }

        var references: [SlotAddress: Int] = [:]
        let fileSizes = pool.monitor.withLock { pool.files }.mapValues { (try? $0.size()) ?? 0 }
        for (key, versions) in rows {
            guard let volume = volumes[key.volume] else {
                problem("mappings of missing volume \(key.volume)")
                continue
            }
            guard let geometry = try? ChunkGeometry(chunkSize: volume.chunkSize) else { continue }
            let maximumSize = ([volume.size] + (snapshotsByVolume[volume.id] ?? []).map(\.size)).max()!
            if key.chunk >= geometry.chunkCount(for: maximumSize) {
                problem("\(volume.name) chunk \(key.chunk) is past the end of the volume and its snapshots")
            }
            for (index, version) in versions.enumerated() {
                let place = "\(volume.name) chunk \(key.chunk) version \(version.birth)"
                if index > 0 && versions[index - 1].birth >= version.birth { problem("\(place): births not increasing") }
                if version.birth > volume.epoch { problem("\(place): born after the volume's epoch \(volume.epoch)") }
                if version.definedMask & ~geometry.fullMask != 0 { problem("\(place): mask has bits past the chunk") }
                if version.dataMask & ~version.definedMask != 0 { problem("\(place): data outside its defined mask") }
                if !version.hasSlot {
                    if version.dataMask != 0 { problem("\(place): data bits without a slot") }
                    continue
                }
                if version.dataMask == 0 { problem("\(place): a slot without data") }
                guard let file = slotFiles[version.slot.file], file.chunkSize == volume.chunkSize else {
                    problem("\(place): slot \(version.slot) is not in a slot file of chunk size \(volume.chunkSize)")
                    continue
                }
                let highestByte = version.slot.index * UInt64(file.chunkSize)
                    + UInt64(64 - version.dataMask.leadingZeroBitCount) * UInt64(geometry.subBlockSize)
                if version.dataMask != 0 && highestByte > fileSizes[file.id] ?? 0 {
                    problem("\(place): slot \(version.slot) lies past the end of \(file.name)")
                }
                references[version.slot, default: 0] += 1
            }
        }
        report.referencedSlots = references.count

        try compareWithMemory(rows, references: references, problem: problem)
        try scanForLeaks(repair: repair, report: &report)
        pool.logger.info(
            "pool check finished",
            metadata: ["errors": "\(report.errors.count)", "leaked_slots": "\(report.leakedSlots)"])
        return report
    }

    /// The maps and reference counts in memory must equal what a restart would load.
    private func compareWithMemory(
        _ rows: [ChunkKey: [ChunkVersion]], references: [SlotAddress: Int], problem: (String) -> Void
    ) throws {
        pool.monitor.withLock {
            var memoryCount = 0
            for (id, volume) in pool.state.volumes {
                for (chunk, list) in volume.map {
                    memoryCount += 1
                    if rows[ChunkKey(volume: id, chunk: chunk)] != list.versions {
                        problem("\(volume.record.name) chunk \(chunk): memory and committed metadata differ")
                    }
                }
            }
            let committedChunks = Set(rows.keys.map { $0 })
            if committedChunks.count != memoryCount {
                problem("committed metadata has \(committedChunks.count) mapped chunks, memory has \(memoryCount)")
            }
            for (slot, count) in references where pool.state.refcount(slot) != UInt32(count) {
                problem("slot \(slot): \(count) references in metadata, reference count \(pool.state.refcount(slot))")
            }
        }
    }

    /// Unreferenced slots that still hold data are leaked space (for example after a crash between a
    /// write to a fresh slot and the commit that would have mapped it). They are harmless, since nothing
    /// reads them, and `repair` punches them out.
    private func scanForLeaks(repair: Bool, report: inout PoolCheckReport) throws {
        let targets = pool.monitor.withLock {
            pool.state.allocators.map { (id, allocator) in
                (id, pool.files[id]!, UInt64(allocator.chunkSize), allocator.reusableIndexes(), allocator.highWater)
            }
        }
        for (fileID, file, chunkSize, free, highWater) in targets {
            for index in free {
                let start = index * chunkSize
                guard let data = try file.nextData(from: start), data < start + chunkSize else { continue }
                report.leakedSlots += 1
                report.leakedBytes += chunkSize
                if repair {
                    // Claim the slot so the allocator cannot hand it out while it is being punched.
                    let claimed = pool.monitor.withLock { pool.state.allocators[fileID]!.claimIfReusable(index) }
                    guard claimed else { continue }
                    defer { pool.monitor.withLock { pool.state.allocators[fileID]!.abandon(index) } }
                    try file.punchHole(at: start, length: chunkSize)
                    report.repairedSlots += 1
                }
            }
            if let data = try file.nextData(from: highWater * chunkSize) {
                report.leakedBytes += (try file.size()) - data
                if repair {
                    // Under the monitor: no slot past the high-water mark can be handed out meanwhile.
                    try pool.monitor.withLock {
                        try file.truncate(to: pool.state.allocators[fileID]!.highWater * chunkSize)
                    }
                }
            }
        }
    }
}
