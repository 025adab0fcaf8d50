@_spi(Testing) import CairnEngine
import Foundation
import CairnTestSupport
import InteropSupport
import Synchronization
import Testing

@Suite struct MetadataJournalTests {
    /// Every flushed write survives a power cut at any instant of the journal's life: between appends,
    /// during an append (torn or lost), right after a checkpoint's store commit and before the journal
    /// starts over, and while the start of a journal that started over is being overwritten. The
    /// journal is tiny, so it checkpoints and wraps around dozens of times.
    @Test func flushedWritesSurviveCutsDuringCheckpoints() throws {
        let seed = SeededGenerator.seedFromEnvironment()
        var random = SeededGenerator(seed: seed)
        var options = testOptions()
        options.journalCapacity = 8 << 10
        let media = SimulatedMedia()
        let pool = try Pool(media: media, options: options)
        let blocks = 256
        let volume = try pool.volumes.create(name: "v", size: UInt64(blocks * 4096), chunkSize: 4096).id

        /// Every write in order (block, value), how many of them a completed FLUSH covers, and the
        /// snapshots made (each durable when its call returns).
        struct Model: Sendable {
            var log: [(block: Int, value: UInt8)] = []
            var durable = 0
            var snapshots = 0
        }
        /// A crash image and what the model said just before it was taken (durable writes, snapshots)
        /// and just after (writes started): a checkpoint's image is taken on its own thread while the
        /// test goes on writing.
        struct Image: Sendable {
            var media: SimulatedMedia
            var durableBefore: Int
            var snapshotsBefore: Int
            var startedAfter: Int
        }
        let model = Mutex(Model())
        let images = Mutex<[Image]>([])
        let hookRandom = Mutex(SeededGenerator(seed: seed ^ 0x5EED))
        media.store.setAfterCommit { [media] in
            hookRandom.withLock { rng in
                guard Int.random(in: 0..<4, using: &rng) == 0, images.withLock({ $0.count }) < 60 else { return }
                let before = model.withLock { ($0.durable, $0.snapshots) }
                let image = media.crashImage(using: &rng)
                let after = model.withLock { $0.log.count }
                images.withLock {
                    $0.append(Image(media: image, durableBefore: before.0, snapshotsBefore: before.1, startedAfter: after))
                }
            }
        }
        for step in 0..<400 {
            if step % 50 == 49 {
                _ = try pool.snapshots.create(volume: "v", name: "s\(step)")
                model.withLock { $0.snapshots += 1 }
                continue
            }
            let block = Int.random(in: 0..<blocks, using: &random)
            let value = UInt8(step % 250 + 1)
            model.withLock { $0.log.append((block, value)) }
            try writeBytes(pool, volume, UInt64(block * 4096), [UInt8](repeating: value, count: 4096))
            try pool.flush()
            model.withLock { $0.durable = $0.log.count }
        }
        pool.close()
        let log = model.withLock { $0.log }
        let taken = images.withLock { $0 }
        #expect(taken.count > 20, "seed \(seed): too few crash images (\(taken.count)) to mean anything")
        for (index, image) in taken.enumerated() {
            let reopened = try Pool(media: image.media, options: options)
            defer { reopened.close() }
            let report = try reopened.checker.check()
            #expect(report.isHealthy, "seed \(seed) image \(index): \(report.errors)")
            let id = try reopened.volumes.id(named: "v")
            let bytes = try readBytes(reopened, id, 0, blocks * 4096)
            for block in 0..<blocks {
                // The block's last durable value, or any written after it until the image was taken. A
                // write not yet flushed (a checkpoint's image is taken while the test writes on) may be
                // torn, as the block-device contract allows: each 512-byte sector holds one allowed value.
                let durable = log[..<image.durableBefore].last { $0.block == block }?.value ?? 0
                let allowed = [durable] + log[image.durableBefore..<image.startedAfter].filter { $0.block == block }.map(\.value)
                let sectors = (0..<8).map { sector -> UInt8? in
                    let start = block * 4096 + sector * 512
                    let value = bytes[start]
                    return bytes[start..<(start + 512)].allSatisfy { $0 == value } && allowed.contains(value) ? value : nil
                }
                #expect(
                    sectors.allSatisfy { $0 != nil },
                    "seed \(seed) image \(index): block \(block) sectors read \(sectors), allowed \(allowed)")
            }
            let snapshots = try reopened.snapshots.list(volume: "v").count
            #expect(
                snapshots >= image.snapshotsBefore,
                "seed \(seed) image \(index): \(snapshots) snapshots, \(image.snapshotsBefore) made before the cut")
        }
    }

    /// A frame holds every kind of change it may carry and decodes to the same transaction; a torn
    /// frame (any byte of it missing or changed) ends the journal.
    /// A commit that is not journaled (a volume deletion) checkpoints on the caller's thread while
    /// appends keep waking the checkpoint thread: the two must never run together (the thread once
    /// applied the same frames and left `checkpointed` past the reset `end`, trapping on the next check).
    @Test func checkpointsOnTwoThreadsNeverOverlap() async throws {
        // A pool in a directory: real SQLite commits are slow enough for the two to meet.
        var options = testOptions()
        options.journalCapacity = 8 << 10
        let directory = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let pool = try Pool.open(directory: directory, options: options)
        defer { pool.close() }
        let volume = try pool.volumes.create(name: "v", size: 1 << 20, chunkSize: 4096).id
        let deleted = Atomic<Bool>(false)
        let deleter = Task.detached {
            defer { deleted.store(true, ordering: .releasing) }
            for i in 0..<200 {
                try pool.volumes.create(name: "x\(i)", size: 1 << 20, chunkSize: 4096)
                try pool.volumes.delete(name: "x\(i)")
            }
        }
        // Journaled commits (a write and a FLUSH each) until the deletions are done, or a deadline that
        // a deadlock between the two checkpoints would reach.
        var step = 0
        let deadline = ContinuousClock.now + .seconds(300)
        while !deleted.load(ordering: .acquiring) && ContinuousClock.now < deadline {
            try writeBytes(pool, volume, UInt64(step % 256) * 4096, [UInt8](repeating: UInt8(step % 250 + 1), count: 4096))
            try pool.flush()
            step += 1
        }
        let finished = deleted.load(ordering: .acquiring)
        try #require(finished, "the deletions did not finish within 300 s")
        try await deleter.value
        #expect(step > 0)
        #expect(try pool.checker.check().isHealthy)
        #expect(pool.volumes.list().map(\.name) == ["v"])
    }

    @Test func framesRoundTripAndTornFramesAreRejected() throws {
        var t = MetadataTransaction()
        t.upsertVolumes = [
            VolumeRecord(
                id: 3, name: "vol", size: 1 << 30, chunkSize: 65536, epoch: 7,
                parent: ParentLink(volumeID: 2, epoch: 4), createdAt: 1234, preserveStore: "cold"),
            VolumeRecord(id: 4, name: "plain", size: 4096, chunkSize: 4096, epoch: 1, parent: nil, createdAt: 1),
        ]
        t.upsertSnapshots = [SnapshotRecord(volumeID: 3, name: "s1", epoch: 6, size: 1 << 30, createdAt: 99)]
        t.cloneMapBlocks = [
            CloneMapBlock(sourceID: 3, kind: .persistentDelta, block: 2, bits: [1, 2, 3]),
            CloneMapBlock(sourceID: 3, kind: .protectedRestore, block: 0, bits: nil),
        ]
        let version = ChunkVersion(
            birth: 5, slot: SlotAddress(rawValue: 0x0001_0000_0000_002A), dataMask: 0xF0, definedMask: ~0)
        t.chunks = [(3, 17, [version, version]), (4, 0, [])]
        let payload = try #require(MetadataJournalFormat.encodePayload(t))
        let frame = MetadataJournalFormat.frame(sequence: 9, payload: payload)
        var decoded = MetadataTransaction()
        try MetadataJournalFormat.decodePayload(frame[MetadataJournalFormat.headerSize...], into: &decoded)
        #expect(decoded.upsertVolumes == t.upsertVolumes)
        #expect(decoded.upsertSnapshots == t.upsertSnapshots)
        #expect(decoded.cloneMapBlocks == t.cloneMapBlocks)
        #expect(decoded.chunks.map(\.volumeID) == [3, 4] && decoded.chunks[0].versions == [version, version])
        #expect(decoded.chunks[1].versions.isEmpty)

        let header = try #require(MetadataJournalFormat.header(frame[...]))
        #expect(header.sequence == 9 && header.length == payload.count)
        var torn = frame
        torn[torn.count - 1] ^= 1
        let tornPayload = Array(torn[MetadataJournalFormat.headerSize...])
        #expect(MetadataJournalFormat.checksum(sequence: 9, payload: tornPayload) != header.crc)

        var deletion = MetadataTransaction()
        deletion.deleteVolumes = [3]
        #expect(MetadataJournalFormat.encodePayload(deletion) == nil, "a deletion must go to the store directly")
    }
}
