import CairnAPI
import Foundation
import InteropSupport
import Testing

/// Space accounting end to end: `pool status`, `volume show` and the bytes the data directory occupies
/// on disk (what `du` counts) follow writes, TRIM, WRITE_ZEROES and deletes.
@Suite("space accounting against cairn serve")
struct SpaceDaemonTests {
    /// Bytes the slot files occupy on disk (the metadata WAL grows and shrinks on its own schedule).
    static func slotFileBytes(_ daemon: TestDaemon) -> UInt64 {
        allocatedBytes(atPath: daemon.dataDirectory + "/data")
    }

    @Test("used bytes grow with writes and return to zero after TRIM of everything + FLUSH")
    func trimGivesSpaceBack() async throws {
        try await withDaemon { daemon in
            try await daemon.createVolume("s", "64M")
            let empty = try await daemon.poolStatus()
            #expect(empty.usedBytes == 0 && empty.fileBytes == 0 && empty.provisionedBytes == UInt64(64 * MiB))
            let duBefore = allocatedBytes(atPath: daemon.dataDirectory)

            try await daemon.qemuIOOK("s", ["write -P 0x10 0 24m", "write -P 0x11 \(40 * MiB) 8m"])
            let written = try await daemon.poolStatus()
            #expect(written.usedBytes == UInt64(32 * MiB), "\(written)")
            #expect(written.fileBytes >= UInt64(32 * MiB) && written.fileBytes < UInt64(33 * MiB), "\(written)")
            #expect(Self.slotFileBytes(daemon) >= UInt64(32 * MiB), "du of the slot files")
            #expect(allocatedBytes(atPath: daemon.dataDirectory) >= duBefore + UInt64(32 * MiB))
            #expect(try await daemon.volume("s").allocatedBytes == UInt64(32 * MiB))

            // TRIM everything, then FLUSH (qemu-io sends TRIM without FUA; the FLUSH commits the frees).
            try await daemon.qemuIOOK("s", ["discard 0 64m", "flush"])
            let trimmed = try await daemon.poolStatus()
            #expect(trimmed.usedBytes == 0, "\(trimmed)")
            #expect(trimmed.pendingFreeBytes == 0, "FLUSH committed the frees: \(trimmed)")
            #expect(trimmed.fileBytes < UInt64(MiB), "freed slots were punched out: \(trimmed)")
            #expect(Self.slotFileBytes(daemon) < UInt64(MiB), "du of the slot files after TRIM")
            #expect(try await daemon.volume("s").allocatedBytes == 0)
            try await daemon.qemuIOOK("s", ["read -P 0 0 64m"])
            try await daemon.expectHealthy()
        }
    }

    @Test("partial TRIM frees sub-blocks in place; WRITE_ZEROES with NO_HOLE keeps space, without it frees")
    func partialTrimAndZeroes() async throws {
        try await withDaemon { daemon in
            try await daemon.createVolume("p", "16M")
            try await daemon.qemuIOOK("p", ["write -P 0x20 0 8m", "flush"])
            let full = Self.slotFileBytes(daemon)
            #expect(full >= UInt64(8 * MiB))
            // Every other 4 KiB sub-block of the first 4 MiB: chunks stay referenced, half their space goes.
            var commands: [String] = []
            for offset in stride(from: 0, to: 4 * MiB, by: 8192) { commands.append("discard \(offset) 4k") }
            commands.append("flush")
            try await daemon.qemuIOOK("p", commands)
            let half = try await daemon.poolStatus()
            // usedBytes counts data, not slots: the punched half of the first 4 MiB is gone.
            #expect(half.usedBytes == UInt64(6 * MiB), "half of the first 4 MiB was punched: \(half)")
            #expect(try await daemon.volume("p").allocatedBytes == UInt64(6 * MiB))
            let afterPartial = Self.slotFileBytes(daemon)
            #expect(
                afterPartial <= full - UInt64(2 * MiB) + UInt64(64 * KiB), "punched in place: \(full) → \(afterPartial)"
            )
            // NO_HOLE keeps the space allocated (the range still reads as zeros).
            try await daemon.qemuIOOK("p", ["write -z 4m 2m", "flush", "read -P 0 4m 2m"])
            #expect(try await daemon.volume("p").allocatedBytes == UInt64(6 * MiB))
            // Without NO_HOLE the space goes back.
            try await daemon.qemuIOOK("p", ["write -z -u 4m 2m", "flush", "read -P 0 4m 2m"])
            let punched = try await daemon.poolStatus()
            #expect(punched.usedBytes == UInt64(4 * MiB), "\(punched)")
            #expect(try await daemon.volume("p").allocatedBytes == UInt64(4 * MiB))
            try await daemon.qemuIOOK("p", ["read -P 0x20 6m 2m", "read -P 0x20 4k 4k", "read -P 0 0 4k"])
            try await daemon.expectHealthy()
        }
    }

    @Test("deleting a volume gives its space back; the space is reused by the next writes")
    func deleteGivesSpaceBack() async throws {
        try await withDaemon { daemon in
            try await daemon.createVolume("keep", "8M")
            try await daemon.createVolume("drop", "32M", chunkSize: "1M")
            try await daemon.qemuIOOK("keep", ["write -P 1 0 4m"])
            try await daemon.qemuIOOK("drop", ["write -P 2 0 24m"])
            let before = try await daemon.poolStatus()
            #expect(before.usedBytes == UInt64(28 * MiB), "\(before)")
            let duBefore = allocatedBytes(atPath: daemon.dataDirectory)
            try await daemon.cliOK(["volume", "delete", "drop"])
            let after = try await daemon.poolStatus()
            #expect(after.usedBytes == UInt64(4 * MiB) && after.volumeCount == 1, "\(after)")
            #expect(after.pendingFreeBytes == 0, "delete commits before it returns: \(after)")
            #expect(after.fileBytes < UInt64(5 * MiB), "\(after)")
            let duAfter = allocatedBytes(atPath: daemon.dataDirectory)
            #expect(duAfter + UInt64(23 * MiB) <= duBefore, "du shrank: \(duBefore) → \(duAfter)")
            // The freed 1 MiB slots are reused by a new volume of the same chunk size: the file does not grow.
            let fileSizeBefore =
                (try? FileManager.default.attributesOfItem(
                    atPath: daemon.dataDirectory + "/data/slots-1048576.dat")[.size] as? UInt64) ?? 0
            try await daemon.createVolume("again", "32M", chunkSize: "1M")
            try await daemon.qemuIOOK("again", ["write -P 3 0 8m", "read -P 3 0 8m"])
            let fileSizeAfter =
                (try? FileManager.default.attributesOfItem(
                    atPath: daemon.dataDirectory + "/data/slots-1048576.dat")[.size] as? UInt64) ?? 0
            #expect(fileSizeAfter <= max(fileSizeBefore, UInt64(24 * MiB)), "\(fileSizeBefore) → \(fileSizeAfter)")
            try await daemon.qemuIOOK("keep", ["read -P 1 0 4m", "read -P 0 4m 4m"])
            try await daemon.expectHealthy()
        }
    }

    @Test("space accounting survives a restart")
    func accountingAfterRestart() async throws {
        try await withDaemon { daemon in
            try await daemon.createVolume("r", "16M")
            try await daemon.qemuIOOK("r", ["write -P 5 0 6m", "discard 1m 1m", "write -P 6 \(10 * MiB + 100) 1"])
            let before = try await daemon.poolStatus()
            let volumeBefore = try await daemon.volume("r")
            try await daemon.stop()
            try await daemon.restart()
            let after = try await daemon.poolStatus()
            #expect(
                after.usedBytes == before.usedBytes && after.provisionedBytes == before.provisionedBytes,
                "\(before) vs \(after)")
            let volumeAfter = try await daemon.volume("r")
            #expect(volumeAfter.allocatedBytes == volumeBefore.allocatedBytes && volumeAfter.size == volumeBefore.size)
            #expect(volumeAfter.allocatedBytes == UInt64(5 * MiB + 4096))
            try await daemon.qemuIOOK(
                "r", ["read -P 5 0 1m", "read -P 0 1m 1m", "read -P 5 2m 4m", "read -P 6 \(10 * MiB + 100) 1"])
            try await daemon.expectHealthy()
        }
    }
}
