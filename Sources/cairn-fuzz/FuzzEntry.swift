import CairnFuzz
import Foundation

/// Built two ways. `scripts/fuzz` builds it with `-sanitize=fuzzer -D CAIRN_FUZZING`: libFuzzer runs
/// the target named by `CAIRN_FUZZ_TARGET`. The ordinary build replays inputs
/// (`cairn-fuzz TARGET FILE|DIRECTORY...`), which is how the test suite keeps every corpus entry and
/// every crash found as a regression test.
#if CAIRN_FUZZING

private let selectedTarget: FuzzTarget = {
    let name = ProcessInfo.processInfo.environment["CAIRN_FUZZ_TARGET"] ?? ""
    guard let target = FuzzTarget.named(name) else {
        fatalError("CAIRN_FUZZ_TARGET must name one of: \(FuzzTarget.all.map(\.name).joined(separator: ", "))")
    }
    return target
}()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    selectedTarget.run(UnsafeRawBufferPointer(start: data, count: size))
    return 0
}

@_silgen_name("LLVMFuzzerRunDriver")
private func runFuzzerDriver(
    _ argc: UnsafeMutablePointer<Int32>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
    _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> Int32
) -> Int32

/// SwiftPM links an executable's entry point as `<module>_main`; libFuzzer's driver takes it from here.
@_cdecl("cairn_fuzz_main")
public func fuzzerMain(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    _ = selectedTarget
    var argc = argc
    var argv = argv
    return runFuzzerDriver(&argc, &argv, fuzzOneInput)
}

#else

@main
enum FuzzReplay {
    static func main() {
        let arguments = Array(CommandLine.arguments.dropFirst())
        if arguments.first == "--list" {
            for target in FuzzTarget.all { print("\(target.name)\t\(target.summary)") }
            return
        }
        if arguments.first == "--write-seeds", arguments.count == 2 {
            do {
                try FuzzSeeds.write(to: arguments[1])
            } catch {
                FileHandle.standardError.write(Data("cairn-fuzz: \(error)\n".utf8))
                exit(1)
            }
            return
        }
        guard arguments.count >= 2, let target = FuzzTarget.named(arguments[0]) else {
            let names = FuzzTarget.all.map(\.name).joined(separator: ", ")
            FileHandle.standardError.write(Data("usage: cairn-fuzz --list | --write-seeds DIRECTORY | TARGET FILE|DIRECTORY... (targets: \(names))\n".utf8))
            exit(2)
        }
        var count = 0
        for path in arguments.dropFirst() {
            for file in inputs(at: path) {
                guard let data = FileManager.default.contents(atPath: file) else {
                    FileHandle.standardError.write(Data("cairn-fuzz: cannot read \(file)\n".utf8))
                    exit(1)
                }
                // Named before it runs: a trap shows which input it was.
                FileHandle.standardError.write(Data("\(target.name): \(file)\n".utf8))
                data.withUnsafeBytes { target.run($0) }
                count += 1
            }
        }
        print("\(target.name): \(count) inputs replayed, none failed")
    }

    /// A file, or every file directly in a directory, sorted for a stable order.
    static func inputs(at path: String) -> [String] {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            FileHandle.standardError.write(Data("cairn-fuzz: \(path) does not exist\n".utf8))
            exit(1)
        }
        guard isDirectory.boolValue else { return [path] }
        let names = (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []
        return names.filter { !$0.hasPrefix(".") }.sorted().map { path + "/" + $0 }
    }
}

#endif
