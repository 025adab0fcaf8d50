@_spi(Testing) import CairnEngine
import CairnTestSupport
import InteropSupport
import Testing

/// Fuzz-style: random names from an alphabet rich in trouble (separators, dots, control characters, NUL,
/// non-ASCII letters, combining marks, emoji, over-long strings) against a model of the rules, through
/// the engine calls that take names. A refused name changes nothing, and the refusal quotes it safely.
@Suite struct NameFuzzTests {
    static let alphabet: [String] = [
        "a", "Z", "7", ".", "..", "_", "-", "/", "\\", "@", " ", "\t", "\n", "\r", "\0", "\u{7f}", "\u{1b}",
        "%2f", "%00", ":", "?", "#", "*", "'", "\"", "é", "e\u{301}", "ß", "Ω", "日", "😀", "\u{200b}", "\u{202e}",
    ]

    /// The documented rule: 1 to 128 bytes of [A-Za-z0-9._-], starting with an ASCII letter or digit.
    static func modelAccepts(_ name: String) -> Bool {
        let allowed = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-".unicodeScalars)
        guard let first = name.unicodeScalars.first, !name.isEmpty, name.utf8.count <= NameRules.maximumLength
        else { return false }
        return first.isASCII && (first.properties.isAlphabetic || ("0"..."9").contains(first))
            && name.unicodeScalars.allSatisfy { allowed.contains($0) }
    }

    static func randomName(_ random: inout SeededGenerator) -> String {
        if Int.random(in: 0..<20, using: &random) == 0 {
            // Around the length limit.
            return "a" + String(repeating: "b", count: Int.random(in: 120...135, using: &random))
        }
        let parts = Int.random(in: 0...12, using: &random)
        return (0..<parts).map { _ in alphabet.randomElement(using: &random)! }.joined()
    }

    @Test func randomNamesAreJudgedByTheRuleAndRefusalsChangeNothing() throws {
        let seed = SeededGenerator.seedFromEnvironment()
        var random = SeededGenerator(seed: seed)
        let pool = try Pool(media: SimulatedMedia(), options: testOptions())
        defer { pool.close() }
        _ = try pool.volumes.create(name: "base", size: 1 << 20)
        var accepted = 0
        var refused = 0
        for round in 0..<2000 {
            let name = Self.randomName(&random)
            let expected = Self.modelAccepts(name)
            var isValid = true
            do { try NameRules.validate(name) } catch let error as EngineError {
                isValid = false
                #expect(error.code == .invalidArgument)
                // The message quotes the name without raw control characters (safe in logs and terminals).
                #expect(
                    !error.message.unicodeScalars.contains { $0.properties.generalCategory == .control },
                    "seed \(seed) round \(round): \(error.message.debugDescription)")
            }
            #expect(isValid == expected, "seed \(seed) round \(round): \(name.debugDescription)")
            let before = pool.volumes.list().map(\.name)
            let snapshotsBefore = try pool.snapshots.list().map(\.name)
            let created = (try? pool.volumes.create(name: name, size: 1 << 20)) != nil
            let snapshotted = (try? pool.snapshots.create(volume: "base", name: name)) != nil
            if expected {
                accepted += 1
                // A valid name may still be taken already; otherwise both calls succeed.
                #expect(created || before.contains(name), "seed \(seed) round \(round): \(name.debugDescription)")
                #expect(snapshotted || snapshotsBefore.contains(name), "seed \(seed) round \(round)")
            } else {
                refused += 1
                #expect(!created && !snapshotted, "seed \(seed) round \(round): accepted \(name.debugDescription)")
                #expect(pool.volumes.list().map(\.name) == before, "seed \(seed) round \(round)")
                #expect(try pool.snapshots.list().map(\.name) == snapshotsBefore, "seed \(seed) round \(round)")
            }
        }
        // The generator exercised both sides.
        #expect(accepted > 20 && refused > 500, "seed \(seed): \(accepted) accepted, \(refused) refused")
        #expect(try pool.checker.check().isHealthy)
    }
}
