/// The one-way-mirror design's three ways to build the one-way mirror (fig. 9-13, 14-20, 21-27). They differ in where
/// the data both images share lives; all give the same images.
public enum BackupMethod: String, Sendable, Codable, CaseIterable {
    /// A full copy of the volume, kept mirrored before the split and broken at T: image A is the copy,
    /// image B the volume. Fastest split, twice the space.
    case mirror
    /// Write logging: image A is the volume itself (common data); image B keeps only what new sessions
    /// wrote, in a log volume with a lookup table on B; a write from A to a block B has logged reaches
    /// the log too, so B keeps seeing it. After the backup the log is merged back into the volume.
    case log
    /// Copy-on-write: image B is the volume (common data); image A is the engine's point-in-time copy (a
    /// snapshot and a writable clone of it), whose lookup table is the clone's map. Old contents are
    /// preserved by the engine the first time B overwrites a block.
    case cow

    /// The default, as bench/backup_split.py favours: the split costs two metadata commits and no copy,
    /// and B's writes pay one in-engine copy-on-write per chunk at most.
    public static let standard: BackupMethod = .cow
}

/// Which image a session's I/O goes to.
public enum MirrorSide: String, Sendable, Codable {
    /// Image A: sessions open at the split. Their writes reach A and B.
    case a
    /// Image B: every session opened after the split (and all of them once A is frozen).
    case b
}
