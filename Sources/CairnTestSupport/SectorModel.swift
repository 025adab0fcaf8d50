/// What each 512-byte sector of a volume may contain, as the block-device contract allows: after a crash,
/// a sector holds the value it had at the last completed FLUSH (or FUA write), or any value written to it
/// since. The model tests of the engine (power loss, snapshots, a pool on RADOS) all check against it.
public struct SectorModel: Sendable {
    public static let sector = 512
    /// What a reader sees now.
    public var current: [UInt32]
    /// What survives a crash for certain.
    public var durable: [UInt32]
    /// Values written since the last durable point: a crash may keep any of them.
    public var since: [[UInt32]]

    public init(sectors: Int) { self.init(Array(repeating: 0, count: sectors)) }

    /// A volume whose content `content` is durable (a fresh clone or a rollback of a snapshot).
    public init(_ content: [UInt32]) {
        current = content
        durable = content
        since = Array(repeating: [], count: content.count)
    }

    public mutating func set(_ sector: Int, _ value: UInt32, durably: Bool = false) {
        current[sector] = value
        if durably {
            durable[sector] = value
            since[sector] = []
        } else {
            since[sector].append(value)
        }
    }

    public mutating func flushed() { self = SectorModel(current) }

    public func allowed(_ sector: Int) -> [UInt32] { [durable[sector]] + since[sector] }

    /// What `sector` may hold now: any value a crash may have left (`afterCrash`), else exactly the
    /// current one.
    public func allowed(_ sector: Int, afterCrash: Bool) -> [UInt32] {
        afterCrash ? allowed(sector) : [current[sector]]
    }

    /// The first sector of `image` (as `Pool.sectorImage` reads it) holding content the model does not
    /// allow; nil when every sector is allowed.
    public func firstMismatch(in image: [[UInt8]], afterCrash: Bool) -> Int? {
        image.indices.first { s in !allowed(s, afterCrash: afterCrash).contains { Self.bytes($0, sector: s) == image[s] } }
    }

    /// Content of `sector` holding write `value` (0: zeros). Self-identifying, so a read tells which
    /// write it came from.
    public static func bytes(_ value: UInt32, sector: Int) -> [UInt8] {
        guard value != 0 else { return [UInt8](repeating: 0, count: Self.sector) }
        var out = [UInt8](repeating: 0, count: Self.sector)
        withUnsafeBytes(of: value.littleEndian) { out.replaceSubrange(0..<4, with: $0) }
        withUnsafeBytes(of: UInt32(sector).littleEndian) { out.replaceSubrange(4..<8, with: $0) }
        for i in 8..<Self.sector { out[i] = UInt8(truncatingIfNeeded: Int(value) &* 131 &+ sector &* 7 &+ i) }
        return out
    }
}
