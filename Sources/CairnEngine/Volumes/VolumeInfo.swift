import CairnIO

/// A volume as management commands show it.
public struct VolumeInfo: Sendable, Hashable {
    public var id: UInt64
    public var name: String
    /// Virtual size in bytes.
    public var size: UInt64
    public var chunkSize: UInt32
    /// Bytes holding data in this volume's own chunks (sub-blocks with their mask bit set).
    public var allocatedBytes: UInt64
    /// Chunks with at least one version of their own.
    public var mappedChunks: Int
    public var snapshotCount: Int
    /// Sessions attached (NBD connections).
    public var attachments: Int
    public var createdAt: Int64
    /// For a clone: "volume@snapshot" it was cloned from.
    public var origin: String?
    /// Store that preserved data is copied out to (nil: it stays in the pool).
    public var preserveStore: String?
}
