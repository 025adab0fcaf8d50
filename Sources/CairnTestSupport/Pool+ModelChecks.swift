import CairnEngine
import Glibc

extension Pool {
    /// A volume, or one of its snapshots, read whole and cut into `SectorModel.sector`-byte sectors to
    /// compare with a `SectorModel`. The buffer starts as 0xEE, so bytes a read failed to fill never pass
    /// for zeros or for a write.
    public func sectorImage(volume: String, snapshot: String?, sectors: Int) throws -> [[UInt8]] {
        let sector = SectorModel.sector
        let id = try volumes.id(named: volume)
        let epoch = try snapshot.map { try snapshots.info(volume: volume, name: $0).epoch }
        var buffer = [UInt8](repeating: 0xEE, count: sectors * sector)
        _ = try buffer.withUnsafeMutableBytes { try read(volumeID: id, snapshotEpoch: epoch, offset: 0, into: $0) }
        return (0..<sectors).map { Array(buffer[($0 * sector)..<(($0 + 1) * sector)]) }
    }

    /// Blocks until no background job (reclaim, dedup, scrub) runs, so a check sees their end state.
    public func waitForJobs() {
        while jobs.list().contains(where: { $0.state == .running }) { usleep(1000) }
    }
}
