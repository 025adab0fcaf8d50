import Foundation

/// The seed of a randomized test: $CAIRN_SEED when set (to replay a failure), else a fresh one. Tests
/// print it in every failure message.
public enum TestSeed {
    public static func make() -> UInt64 {
        if let text = ProcessInfo.processInfo.environment["CAIRN_SEED"], let value = UInt64(text) { return value }
        return UInt64.random(in: 1...UInt64(UInt32.max))
    }
}

/// SplitMix64: small, fast and reproducible from a seed (SystemRandomNumberGenerator is not). The one
/// generator every randomized test in the project uses, from the wire codecs to the crash tests.
public struct SeededGenerator: RandomNumberGenerator, Sendable {
    private var state: UInt64
    public init(seed: UInt64) { state = seed }

    /// $CAIRN_SEED when set (to replay a failure), else a fresh seed; tests print it on failure.
    public static func seedFromEnvironment() -> UInt64 { TestSeed.make() }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A value in `0..<bound` (for model tests that pick indices).
    public mutating func next(_ bound: Int) -> Int { Int(next() % UInt64(bound)) }
}

extension SeededGenerator {
    /// Runs a randomized model test with the environment's seed and returns its failures. An error thrown
    /// mid-run is a failure like the others: reported with the seed that replays it and `label` (which
    /// run: "chunk 4096").
    public static func modelFailures(_ label: String, _ run: (_ seed: UInt64) throws -> [String]) -> [String] {
        let seed = seedFromEnvironment()
        do { return try run(seed) } catch {
            return ["seed \(seed) \(label): \(error)"]
        }
    }
}
