import CairnAPI
import Foundation
import InteropSupport
import Testing

// Helpers for the daemon-level suites that need the API's types (InteropSupport is Foundation-only).

extension TestDaemon {
    /// `cairn COMMAND --data-dir DIR OPTIONS -- POSITIONALS`: positionals after "--" may start with '-'
    /// (`cli` appends --data-dir at the end, where "--" would swallow it).
    func cli(_ command: [String], positionals: [String], options: [String] = []) async throws -> ProcessResult {
        try await runTool(TestDaemon.binary, command + ["--data-dir", dataDirectory] + options + ["--"] + positionals)
    }

    /// `cairn volume create NAME SIZE` (exit 0 or the test fails with the output).
    @discardableResult
    func createVolume(_ name: String, _ size: String, chunkSize: String? = nil) async throws -> VolumeDTO {
        var arguments = ["volume", "create", name, size, "--json"]
        if let chunkSize { arguments += ["--chunk-size", chunkSize] }
        let result = try await cliOK(arguments)
        return try decode(VolumeDTO.self, result)
    }

    /// `cairn volume show NAME --json`.
    func volume(_ name: String) async throws -> VolumeDTO {
        try decode(VolumeDTO.self, try await cliOK(["volume", "show", name, "--json"]))
    }

    /// `cairn volume list --json`.
    func volumes() async throws -> [VolumeDTO] {
        try decode([VolumeDTO].self, try await cliOK(["volume", "list", "--json"]))
    }

    /// `cairn pool status --json`.
    func poolStatus() async throws -> PoolStatusDTO {
        try decode(PoolStatusDTO.self, try await cliOK(["pool", "status", "--json"]))
    }

    /// `cairn pool check --json`; returns the report and the exit status.
    func poolCheck(repair: Bool = false) async throws -> (PoolCheckDTO, Int32) {
        let result = try await cli(["pool", "check", "--json"] + (repair ? ["--repair"] : []))
        return (try decode(PoolCheckDTO.self, result), result.status)
    }

    /// Expects `cairn pool check` to report a healthy pool with exit status 0.
    func expectHealthy(sourceLocation: SourceLocation = #_sourceLocation) async throws {
        let (report, status) = try await poolCheck()
        #expect(
            status == 0 && report.healthy && report.errors.isEmpty, "pool check: \(report)",
            sourceLocation: sourceLocation)
        #expect(report.leakedSlots == 0, "pool check found leaked slots: \(report)", sourceLocation: sourceLocation)
    }

    /// After a kill -9: `pool check` finds a healthy pool, and `--repair` leaves no leaked slot. A free
    /// slot may hold the data of a write whose commit never came (the allocator hands it out again; until
    /// then it only takes space), and repair must give that space back.
    func expectHealthyAfterCrash(sourceLocation: SourceLocation = #_sourceLocation) async throws {
        let (report, status) = try await poolCheck(repair: true)
        #expect(
            status == 0 && report.healthy && report.errors.isEmpty, "pool check --repair: \(report)",
            sourceLocation: sourceLocation)
        #expect(report.repairedSlots == report.leakedSlots, "pool check --repair: \(report)", sourceLocation: sourceLocation)
        try await expectHealthy(sourceLocation: sourceLocation)
    }

    /// qemu-io on one of this daemon's volumes (raw format), each command a `-c`.
    func qemuIO(_ volume: String, _ commands: [String], binary: String = Tools.qemuIO, timeout: Double = 120)
        async throws -> ProcessResult
    {
        try await runTool(binary, ["-f", "raw", uri(volume)] + commands.flatMap { ["-c", $0] }, timeout: timeout)
    }

    /// qemu-io that must succeed with every pattern check passing.
    @discardableResult
    func qemuIOOK(
        _ volume: String, _ commands: [String], binary: String = Tools.qemuIO,
        sourceLocation: SourceLocation = #_sourceLocation
    ) async throws -> ProcessResult {
        let result = try await qemuIO(volume, commands, binary: binary)
        let failed = result.stdout.contains("failed") || result.stderr.contains("failed")
        #expect(
            result.status == 0 && !result.qemuIOPatternFailed && !failed, "qemu-io \(commands): \(result)",
            sourceLocation: sourceLocation)
        return result
    }

    /// `qemu-img map --output=json` of a volume, as [start, length, data, zero] rows.
    func qemuImgMap(_ volume: String, binary: String = Tools.qemuImg) async throws -> [MapExtent] {
        let map = try await runTool(binary, ["map", "-f", "raw", "--output=json", uri(volume)])
        guard map.status == 0 else { throw TestDaemonError("qemu-img map: \(map)") }
        return try JSONDecoder().decode([MapExtent].self, from: Data(map.stdout.utf8))
    }
}

/// One row of `qemu-img map --output=json`.
struct MapExtent: Decodable, Equatable, CustomStringConvertible {
    var start: Int
    var length: Int
    var data: Bool
    var zero: Bool

    var description: String { "[\(start)+\(length) \(data ? "data" : "hole")\(zero ? ",zero" : "")]" }
}

/// Decodes a CLI command's --json output, with the output in the error.
func decode<T: Decodable>(_ type: T.Type, _ result: ProcessResult) throws -> T {
    do {
        return try JSONDecoder().decode(T.self, from: Data(result.stdout.utf8))
    } catch {
        throw TestDaemonError("cannot decode \(T.self) (\(error)) from \(result)")
    }
}

/// Merges adjacent map rows of the same kind (qemu-img splits at request boundaries).
func coalesce(_ extents: [MapExtent]) -> [MapExtent] {
    var result: [MapExtent] = []
    for extent in extents {
        if var last = result.last, last.data == extent.data, last.zero == extent.zero,
            last.start + last.length == extent.start
        {
            last.length += extent.length
            result[result.count - 1] = last
        } else {
            result.append(extent)
        }
    }
    return result
}

/// The data ranges of a map, as [start, end) pairs.
func dataRanges(_ extents: [MapExtent]) -> [Range<Int>] {
    coalesce(extents).filter(\.data).map { $0.start..<($0.start + $0.length) }
}

let KiB = 1 << 10
let MiB = 1 << 20
