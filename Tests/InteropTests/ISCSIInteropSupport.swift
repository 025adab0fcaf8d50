import Foundation
import InteropSupport
import Testing

/// libiscsi's tools (Debian's libiscsi-bin) and the iSCSI side of a test daemon.
enum ISCSITools {
    static let ls = "/usr/bin/iscsi-ls"
    static let inq = "/usr/bin/iscsi-inq"
    static let readCapacity16 = "/usr/bin/iscsi-readcapacity16"
    static let testSuite = "/usr/bin/iscsi-test-cu"
    static let perf = "/usr/bin/iscsi-perf"
    /// The target name prefix the daemon uses (VolumeISCSICatalog).
    static let prefix = "iqn.2026-12.dev.cairn:"
}

extension TestDaemon {
    /// The iSCSI port the daemon listens on (daemon.json's "iscsi", a free port in tests).
    func iscsiPort() throws -> Int {
        let data = try Data(contentsOf: URL(fileURLWithPath: dataDirectory + "/daemon.json"))
        guard let info = try JSONSerialization.jsonObject(with: data) as? [String: Any],
            let address = info["iscsi"] as? String, let port = Int(address.split(separator: ":").last ?? "")
        else { throw TestDaemonError("daemon.json has no iSCSI listener: \(String(decoding: data, as: UTF8.self))") }
        return port
    }

    /// iscsi://127.0.0.1:PORT/iqn.2026-12.dev.cairn:EXPORT/0 (EXPORT: `vol` or `vol:snap`).
    func iscsiURL(_ export: String) throws -> String {
        "iscsi://127.0.0.1:\(try iscsiPort())/\(ISCSITools.prefix)\(export)/0"
    }

    /// qemu-io over iSCSI, each command a `-c`; must succeed with every pattern check passing.
    @discardableResult
    func qemuIOOverISCSI(
        _ export: String, _ commands: [String], readOnly: Bool = false, sourceLocation: SourceLocation = #_sourceLocation
    ) async throws -> ProcessResult {
        let result = try await runTool(
            Tools.qemuIO, (readOnly ? ["-r"] : []) + ["-f", "raw", try iscsiURL(export)] + commands.flatMap { ["-c", $0] })
        let failed = result.stdout.contains("failed") || result.stderr.contains("failed")
        #expect(
            result.status == 0 && !result.qemuIOPatternFailed && !failed, "qemu-io iSCSI \(commands): \(result)",
            sourceLocation: sourceLocation)
        return result
    }
}
