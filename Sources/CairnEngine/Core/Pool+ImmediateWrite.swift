import CairnIO
import Synchronization

extension Pool {
    /// Largest write tried immediately: one pwrite, no longer than the blocking path's pieces.
    public static let maximumImmediateWrite = maximumWriteSegment

    /// Writes `bytes` at `offset` of volume `volumeID` on the calling thread if that needs no wait: a write
    /// inside one chunk whose version is the volume's own and already has a slot (no copy-on-write, no
    /// new slot, no copy at the edges; at most the version's data mask grows, in memory, committed like
    /// any write), with every lock free and the page cache taking the bytes.
    /// Returns false having changed nothing otherwise; the caller then takes the blocking path
    /// (`writeDeferringCommit` on the I/O threads). Never FUA: a durable write waits for the disk.
    ///
    /// This is what lets a host's hot overwrites be done on the network event loop: the two thread
    /// wake-ups of a trip through the I/O executor cost more than the page-cache write itself.
    public func writeIfImmediate(volumeID: UInt64, offset: UInt64, bytes: UnsafeRawBufferPointer) throws -> Bool {
        let length = UInt64(bytes.count)
        guard length > 0, length <= Self.maximumImmediateWrite,
            !cloneGroups.inUse.load(ordering: .relaxed), !stores.inUse.load(ordering: .relaxed),
            immediateWrites.isOpen
        else { return false }
        guard let plan = try planWrite(volumeID: volumeID, offset: offset, length: length, end: nil, immediate: true)
        else { return false }
        let chunk = plan.chunks[0]
        let file = plan.files[chunk.target.file]!
        let at = chunk.target.index * UInt64(plan.geometry.chunkSize) + UInt64(chunk.segment.lowerBound)
        let started = ContinuousClock.now
        let written: Bool
        do {
            written = try file.writeIfImmediate(bytes, at: at)
        } catch {
            finishWrite(plan, succeeded: false)
            throw EngineError.io("writing volume data", error)
        }
        // Nothing written (the file would have waited): nothing to install either, or a grown data mask
        // would claim blocks the slot does not hold.
        finishWrite(plan, succeeded: written)
        if written { immediateWrites.record(ContinuousClock.now - started) }
        return written
    }

    /// An overwrite, or an exclusive version with a slot gaining whole sub-blocks: nothing to allocate,
    /// copy or pad, only the data write itself.
    static func needsNoOtherIO(_ chunk: ChunkWrite) -> Bool {
        switch chunk.kind {
        case .inPlace: true
        case .update: !chunk.freshSlot && chunk.fills.isEmpty && !chunk.padHead && !chunk.padTail
        case .newVersion, .replace: false
        }
    }
}

/// Whether writes may be tried on the caller's thread. A page-cache write can still sleep in the kernel
/// when the machine's dirty pages pass their limit (balance_dirty_pages), or behind another writer's
/// inode lock; an event loop that met such a sleep sends writes through the I/O threads for a while
/// instead of sleeping again and again. Only wall time is measured: asking the kernel whether the
/// thread slept (getrusage) cost 6 % of the event loop, so a write that was merely preempted closes the
/// path too, which is why the pause is short.
public final class ImmediateWriteGate: Sendable {
    /// An immediate write that took longer than this was held up (a page-cache write takes microseconds).
    public static let defaultStallLimit: Duration = .milliseconds(2)
    /// How long writes stay off the immediate path after a held-up one: at most a few stalls a second
    /// reach the event loop while the kernel throttles.
    static let backoff: Duration = .milliseconds(250)

    private let stallLimit: Duration
    private let reopensAt = Mutex<ContinuousClock.Instant?>(nil)
    /// Immediate writes done, and how many of them the kernel throttled (for tests and status).
    let written = Atomic<UInt64>(0)
    let throttled = Atomic<UInt64>(0)

    init(stallLimit: Duration) {
        self.stallLimit = stallLimit
    }

    var isOpen: Bool {
        reopensAt.withLock { until in
            guard let reopening = until else { return true }
            if ContinuousClock.now < reopening { return false }
            until = nil
            return true
        }
    }

    func record(_ elapsed: Duration) {
        written.add(1, ordering: .relaxed)
        guard elapsed > stallLimit else { return }
        throttled.add(1, ordering: .relaxed)
        reopensAt.withLock { $0 = ContinuousClock.now + Self.backoff }
    }
}
