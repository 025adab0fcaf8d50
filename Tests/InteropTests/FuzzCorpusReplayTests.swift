import Foundation
import InteropSupport
import Testing

/// Every seed input and every crash the fuzzer ever found (`Fuzz/corpus`, `Fuzz/regressions`) replayed
/// through the ordinary build of `cairn-fuzz`: the same target code libFuzzer drives in `scripts/fuzz`,
/// including a real daemon in that process for the NBD targets. A trap or a hang fails the test.
@Suite("Fuzz corpus replay")
struct FuzzCorpusReplayTests {
    static let fuzzRoot = Tools.packageRoot + "/Fuzz"
    /// The replaying binary sits next to the `cairn` under test.
    static let binary = URL(fileURLWithPath: TestDaemon.binary).deletingLastPathComponent().path + "/cairn-fuzz"

    static let targets = [
        "nbd-handshake", "nbd-transmission", "mirror-frames", "archive-reader", "serve-config", "iscsi-pdus",
    ]

    @Test("the list of targets matches the corpus folders")
    func targetsMatchTheCorpus() async throws {
        let listed = try await runProcess(Self.binary, ["--list"])
        #expect(listed.status == 0, "\(listed)")
        let names = listed.stdout.split(separator: "\n").compactMap { $0.split(separator: "\t").first.map(String.init) }
        #expect(names.sorted() == Self.targets.sorted())
        let folders = try FileManager.default.contentsOfDirectory(atPath: Self.fuzzRoot + "/corpus").sorted()
        #expect(folders == Self.targets.sorted())
    }

    @Test("every seed and regression input of a target runs clean", arguments: targets)
    func replay(target: String) async throws {
        var paths = [Self.fuzzRoot + "/corpus/" + target]
        let regressions = Self.fuzzRoot + "/regressions/" + target
        if FileManager.default.fileExists(atPath: regressions) { paths.append(regressions) }
        let expected = try paths.reduce(0) { count, path in
            count + (try FileManager.default.contentsOfDirectory(atPath: path)).filter { !$0.hasPrefix(".") }.count
        }
        #expect(expected > 0, "no inputs for \(target)")
        let result = try await runProcess(Self.binary, [target] + paths, timeout: 300)
        #expect(result.status == 0, "\(result)")
        #expect(result.stdout.contains("\(target): \(expected) inputs replayed, none failed"), "\(result)")
    }
}
