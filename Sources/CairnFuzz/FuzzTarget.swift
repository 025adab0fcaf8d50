/// A fuzz target: one function that takes any bytes and must neither trap nor hang on any of them.
///
/// libFuzzer drives a target through `cairn-fuzz` built with `-sanitize=fuzzer` (`scripts/fuzz`); the
/// ordinary build of the same executable replays a corpus, which is how every crash found stays a
/// regression test (`Fuzz/regressions/<target>/`, replayed by the test suite).
public struct FuzzTarget: Sendable {
    public let name: String
    /// One line for `cairn-fuzz --list`.
    public let summary: String
    private let body: @Sendable (UnsafeRawBufferPointer) -> Void

    init(name: String, summary: String, body: @escaping @Sendable (UnsafeRawBufferPointer) -> Void) {
        self.name = name
        self.summary = summary
        self.body = body
    }

    /// Feeds one input to the target. Returns normally for every input; a bug traps.
    public func run(_ input: UnsafeRawBufferPointer) { body(input) }

    public static let all: [FuzzTarget] = [
        .nbdHandshake, .nbdTransmission, .mirrorFrames, .archiveReader, .serveConfig, .iscsiPDUs,
    ]

    public static func named(_ name: String) -> FuzzTarget? { all.first { $0.name == name } }
}

/// Reads an input front to back; past the end every read is zero, so any input is a valid program.
struct FuzzInput {
    private let storage: UnsafeRawBufferPointer
    private(set) var position = 0

    init(_ bytes: UnsafeRawBufferPointer) { storage = bytes }

    var isAtEnd: Bool { position >= storage.count }
    var remaining: Int { max(0, storage.count - position) }

    mutating func byte() -> UInt8 {
        defer { position += 1 }
        return position < storage.count ? storage[position] : 0
    }

    mutating func integer<T: FixedWidthInteger & UnsignedInteger>(_: T.Type = T.self) -> T {
        var value: T = 0
        for _ in 0..<MemoryLayout<T>.size { value = value << 8 | T(byte()) }
        return value
    }

    /// Up to `count` bytes (fewer at the end of the input).
    mutating func bytes(_ count: Int) -> [UInt8] {
        let available = min(count, remaining)
        defer { position += available }
        return available > 0 ? Array(storage[position..<position + available]) : []
    }

    mutating func rest() -> [UInt8] { bytes(remaining) }
}
