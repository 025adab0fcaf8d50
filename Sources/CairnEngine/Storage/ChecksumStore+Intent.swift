import CairnIO

/// The write-intent state of one checksum file (the scheme of md's write-intent bitmap and
/// dm-integrity's bitmap mode). A region of the slot file is *marked* durably before its first write;
/// while marked, its data and checksums may disagree on the disk (a write that was never flushed lands
/// without its checksum, or the reverse), so after an unclean stop the checksums of marked regions are
/// recomputed from the data found there: a torn write reads old, new or mixed, never as an error.
/// A mark is cleared by a group commit once the region saw no write for a whole commit interval and
/// the commit synced both its data and its checksums.
struct IntentState {
    /// The bitmap as on the disk: a bit is set here only once its mark is durable.
    var bitmap = [UInt8](repeating: 0, count: Int(ChecksumLayout.intentAreaSize))
    /// Writes in flight and the commit sequence of the last write's start, per region touched since open.
    var activity: [UInt64: (inFlight: Int, lastWrite: UInt64)] = [:]
    /// Incremented as each group commit starts syncing.
    var commitSequence: UInt64 = 1

    func isMarked(_ region: UInt64) -> Bool { bitmap[Int(region / 8)] & (1 << (region % 8)) != 0 }

    /// Marked regions, lowest first.
    var marked: [UInt64] {
        var out: [UInt64] = []
        for (index, byte) in bitmap.enumerated() where byte != 0 {
            for bit in 0..<8 where byte & (1 << bit) != 0 { out.append(UInt64(index * 8 + bit)) }
        }
        return out
    }
}

/// Regions a commit may clear once its syncs succeed (`ChecksumStore.beginCommit`).
struct IntentCandidates {
    var sequence: UInt64
    var regions: [UInt64]
}

extension ChecksumStore {
    /// Regions of the slot data range `[offset, offset + length)`.
    static func regions(at offset: UInt64, length: UInt64) -> ClosedRange<UInt64> {
        let size = ChecksumLayout.intentRegionSize
        return (offset / size)...((offset + max(length, 1) - 1) / size)
    }

    func loadIntent() throws {
        var bytes = [UInt8](repeating: 0, count: Int(ChecksumLayout.intentAreaSize))
        try bytes.withUnsafeMutableBytes { try file.read(into: $0, at: 0) }
        intentMonitor.withLock { intent.bitmap = bytes }
    }

    /// Regions marked on the disk (at open: those written since their last clean sync).
    var markedRegions: [UInt64] { intentMonitor.withLock { intent.marked } }

    /// Declares writes to `regions`: marks each durably first if needed (one write and sync of the
    /// bitmap), then counts the write in flight until `endWrite`.
    func beginWrite(_ regions: ClosedRange<UInt64>) throws {
        var entered: [UInt64] = []
        do {
            for region in regions {
                while !enterIfMarked(region) { try mark(region) }
                entered.append(region)
            }
        } catch {
            for region in entered { endWrite(region...region) }
            throw error
        }
    }

    /// `beginWrite` if every region is already marked (no intent write, no sync); false, having entered
    /// nothing, otherwise.
    func beginWriteIfMarked(_ regions: ClosedRange<UInt64>) -> Bool {
        intentMonitor.withLock {
            guard regions.allSatisfy({ intent.isMarked($0) }) else { return false }
            for region in regions {
                let previous = intent.activity[region]?.inFlight ?? 0
                intent.activity[region] = (previous + 1, intent.commitSequence)
            }
            return true
        }
    }

    func endWrite(_ regions: ClosedRange<UInt64>) {
        intentMonitor.withLock {
            for region in regions { intent.activity[region]?.inFlight -= 1 }
        }
    }

    private func enterIfMarked(_ region: UInt64) -> Bool {
        intentMonitor.withLock {
            guard intent.isMarked(region) else { return false }
            let previous = intent.activity[region]?.inFlight ?? 0
            intent.activity[region] = (previous + 1, intent.commitSequence)
            return true
        }
    }

    private func mark(_ region: UInt64) throws {
        try intentWriteSerial.withLock {
            let (index, byte, already) = intentMonitor.withLock { () -> (Int, UInt8, Bool) in
                let index = Int(region / 8)
                return (index, intent.bitmap[index] | UInt8(1 << (region % 8)), intent.isMarked(region))
            }
            guard !already else { return }
            try [byte].withUnsafeBytes { try file.write($0, at: UInt64(index)) }
            try file.sync()
            intentMonitor.withLock { intent.bitmap[index] = byte }
        }
    }

    /// Called by a group commit before it syncs anything: the marked regions with no write in flight and
    /// none started since the previous commit began. If the commit's syncs succeed, `finishCommit`
    /// clears those of them still untouched.
    func beginCommit() -> IntentCandidates {
        intentMonitor.withLock {
            let sequence = intent.commitSequence
            intent.commitSequence += 1
            let regions = intent.marked.filter { region in
                guard let activity = intent.activity[region] else { return true }
                return activity.inFlight == 0 && activity.lastWrite < sequence
            }
            return IntentCandidates(sequence: sequence, regions: regions)
        }
    }

    /// Clears the candidates that saw no write since `beginCommit` (written, not synced: a lost clear
    /// only costs a recomputation at the next open).
    func finishCommit(_ candidates: IntentCandidates) throws {
        guard !candidates.regions.isEmpty else { return }
        try intentWriteSerial.withLock {
            // One write of the bytes from the first changed one to the last.
            let changed = intentMonitor.withLock { () -> (Int, [UInt8])? in
                var range: ClosedRange<Int>?
                for region in candidates.regions {
                    if let activity = intent.activity[region],
                        activity.inFlight != 0 || activity.lastWrite >= candidates.sequence
                    {
                        continue
                    }
                    let index = Int(region / 8)
                    intent.bitmap[index] &= ~UInt8(1 << (region % 8))
                    intent.activity[region] = nil
                    range = range.map { min($0.lowerBound, index)...max($0.upperBound, index) } ?? index...index
                }
                return range.map { ($0.lowerBound, Array(intent.bitmap[$0])) }
            }
            if let (index, bytes) = changed {
                try bytes.withUnsafeBytes { try file.write($0, at: UInt64(index)) }
            }
        }
    }
}
