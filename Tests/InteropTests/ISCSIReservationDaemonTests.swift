import Foundation
import InteropSupport
import Testing

/// SCSI reservations across real initiator sessions: libiscsi's test tool opens a second session (another
/// initiator name) for these tests, so each one is two sessions of `cairn serve` contending for one volume.
/// libiscsi-bin has no other tool that sends RESERVE or PERSISTENT RESERVE (sg_persist needs a kernel SCSI
/// device, and the test machines have no kernel iSCSI initiator).
@Suite("SCSI reservations between two iSCSI sessions")
struct ISCSIReservationDaemonTests {
    /// The two-session tests, and what each shows.
    static let tests = [
        // RESERVE(6) by one session: the other gets RESERVATION CONFLICT for RESERVE and MODE SENSE, its
        // RELEASE is a no-op, and after the holder's RELEASE the other can reserve.
        "SCSI.Reserve6.2Initiators",
        // The holder logs out, or drops its connection without a logout: the other can reserve.
        "SCSI.Reserve6.Logout", "SCSI.Reserve6.ITNexusLoss",
        // A LOGICAL UNIT RESET, TARGET WARM RESET or COLD RESET from the holder ends the reservation.
        "SCSI.Reserve6.LUNReset", "SCSI.Reserve6.TargetWarmReset", "SCSI.Reserve6.TargetColdReset",
        // Each persistent reservation type: READ and WRITE from the other session, registered and not.
        "SCSI.ProutReserve.AccessEA", "SCSI.ProutReserve.AccessWE", "SCSI.ProutReserve.AccessEARO",
        "SCSI.ProutReserve.AccessWERO", "SCSI.ProutReserve.AccessEAAR", "SCSI.ProutReserve.AccessWEAR",
        // The holder unregisters: a single-holder reservation ends, an all-registrants one stays with the other.
        "SCSI.ProutReserve.OwnershipEA", "SCSI.ProutReserve.OwnershipWE", "SCSI.ProutReserve.OwnershipEARO",
        "SCSI.ProutReserve.OwnershipWERO", "SCSI.ProutReserve.OwnershipEAAR", "SCSI.ProutReserve.OwnershipWEAR",
        // The second session preempts the first's registration.
        "SCSI.ProutPreempt.RemoveRegistration",
    ]

    @Test("a reservation from one session holds off the other's commands and ends with the holder's session")
    func twoSessions() async throws {
        try await withDaemon { daemon in
            try await daemon.createVolume("shared", "64M")
            let url = try daemon.iscsiURL("shared")
            let result = try await runTool(
                ISCSITools.testSuite,
                ["--dataloss", "-t", Self.tests.joined(separator: ","), url],
                timeout: 600
            )
            let outcome = ISCSIComplianceTests.parse(result.stdout)
            // CUnit prints "Suite: Reserve6", so `parse` names tests without the "SCSI." family.
            #expect(outcome.ran == Set(Self.tests.map { String($0.dropFirst("SCSI.".count)) }), "\(result)")
            #expect(outcome.failed.isEmpty, "failed: \(outcome.failed.sorted())\n\(result.stdout.suffix(20000))")
            #expect(outcome.skipped.isEmpty, "skipped: \(outcome.skipped.sorted())\n\(result.stdout.suffix(20000))")
            // The conflicts are counted per operation: the other session's WRITE (Access*), its RESERVE
            // and MODE SENSE (Reserve6.2Initiators).
            let metrics = try await MetricsDaemonTests.scrape(daemon)
            let target = ISCSITools.prefix + "shared"
            for operation in ["write", "reserve", "mode_sense"] {
                let series = ISCSIExtendedCopyTests.series(
                    "cairn_iscsi_commands_total",
                    ["target": target, "operation": operation, "result": "reservation_conflict"]
                )
                #expect(
                    (metrics[series] ?? 0) >= 1,
                    "\(series): \(metrics.filter { $0.key.contains("iscsi_commands") })"
                )
            }
            #expect(daemon.process.isRunning)
        }
    }
}
