import ArgumentParser
import CairnAPI
import Foundation
import NIOHTTP1

/// `cairn mirror ...`: synchronous remote mirroring of a volume to another Cairn daemon.
struct MirrorCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mirror",
        abstract: "Remote mirrors: keep a volume synchronously copied on another Cairn daemon.",
        discussion: """
            The target daemon runs `cairn serve --replication-port PORT --replication-secret-file FILE`; this \
            daemon needs the same secret file. While mirrored, a host write completes only once both daemons \
            have it. If the target stops answering (after the retries), the mirror fractures: writes continue \
            here and a persistent change map records every extent written, so `re-establish` copies only \
            those. `sever` splits the mirror on purpose (the target volume becomes usable there); \
            re-establishing over changes made on the target needs a choice: --discard-target-changes or \
            --take-target-changes. For failover, `promote` (run against the target daemon) makes the target \
            volume writable there.
            """,
        subcommands: [
            Establish.self, Status.self, List.self, Sever.self, Reestablish.self, Remove.self, SetFrameSize.self,
            Target.self, Release.self, Resize.self, Verify.self, Targets.self, Promote.self,
        ])

    struct Targets: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "On a target daemon: the volumes other daemons mirror here, and their state.")
        @OptionGroup var options: ClientOptions

        func run() async throws {
            try await runClient {
                let pairings = try await options.client.get(APIPath.mirrorTargets, as: [MirrorTargetPairingDTO].self)
                if options.json { return try Output.json(pairings) }
                Output.table(
                    ["VOLUME", "PRIMARY", "STATE", "HOSTS", "WRITTEN HERE"],
                    pairings.map {
                        [
                            $0.volume, $0.primaryNode, $0.state, $0.readOnly ? "read-only" : "read-write",
                            $0.modified ? "yes (\($0.changedExtents ?? 0) extents)" : "no",
                        ]
                    })
            }
        }
    }

    struct Verify: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Compare every extent on both daemons (SHA-256); extents that differ are resynced.")
        @OptionGroup var options: ClientOptions
        @Argument var volume: String
        @Flag(help: "Wait for the verify to finish, showing progress.") var wait = false

        func run() async throws {
            try await runClient {
                let mirror = try await options.client.send(
                    .POST, APIPath.mirrorAction(volume, "verify"), body: [String: String](), as: MirrorDTO.self)
                try await finish(mirror, wait: wait, options: options)
            }
        }
    }

    struct Resize: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Grow or shrink a mirrored volume on both daemons together (validated by the target first).")
        @OptionGroup var options: ClientOptions
        @Argument var volume: String
        @Argument(help: "New size: bytes, or a number with K, M, G, T.") var size: String
        @Flag(help: "Allow shrinking (data past the new end is lost on both sides).") var force = false

        func run() async throws {
            let bytes = try parseSize(size)
            try await runClient {
                let mirror = try await options.client.send(
                    .POST, APIPath.mirrorAction(volume, "resize"), body: MirrorResizeRequest(size: bytes, force: force),
                    as: MirrorDTO.self)
                if options.json { try Output.json(mirror) } else { show(mirror) }
            }
        }
    }

    struct Promote: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "On a target daemon, for failover: make VOLUME writable by hosts here and fence its primary off.",
            discussion: """
                The primary's next write is refused (its mirror fractures) and its next re-establish must choose \
                --take-target-changes (copy what hosts write here back to the primary) or --discard-target-changes.
                """)
        @OptionGroup var options: ClientOptions
        @Argument var volume: String

        func run() async throws {
            try await runClient {
                let pairing = try await options.client.send(
                    .POST, APIPath.mirrorAction(volume, "promote"), body: [String: String](), as: MirrorTargetPairingDTO.self)
                if options.json { return try Output.json(pairing) }
                Output.fields([
                    ("volume", pairing.volume), ("role", "promoted (writable by hosts)"), ("primary", pairing.primaryNode),
                    ("generation", pairing.promotedGeneration ?? pairing.generation),
                ])
            }
        }
    }

    struct Release: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "On a target daemon: forget that VOLUME mirrors a primary (when that primary is gone for good).")
        @OptionGroup var options: ClientOptions
        @Argument var volume: String

        func run() async throws {
            try await runClient {
                try await options.client.send(.POST, APIPath.mirrorAction(volume, "release"), body: Data("{}".utf8))
                if !options.json { print("volume '\(volume)' is no longer a mirror target") }
            }
        }
    }

    struct Establish: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Mirror VOLUME to a volume on another daemon (created there if missing) and sync it.")
        @OptionGroup var options: ClientOptions
        @Argument(help: "The volume on this daemon (the primary).") var volume: String
        @Option(help: "The target: HOST:PORT/VOLUME (PORT is the target daemon's --replication-port).")
        var target: String
        @Option(help: "Bytes per change-map bit, a power of two from 4K to 1G (default 1M).") var extentSize: String?
        @Flag(help: "Overwrite the target volume's existing data (it holds data, or belongs to another mirror).")
        var discardTargetChanges = false
        @Option(
            help: """
                ASYNCHRONOUS mode: a host write completes once written here, with at most SIZE bytes not yet \
                acknowledged by the target (lost if this daemon is lost for good). Default: synchronous.
                """)
        var asyncLag: String?
        @Flag(help: "Wait for the initial sync to finish, showing progress.") var wait = false

        func run() async throws {
            let extent = try extentSize.map { try parseSize($0, what: "extent size") }
            let lag = try asyncLag.map { try parseSize($0, what: "lag") }
            try await runClient {
                let mirror = try await options.client.send(
                    .POST, APIPath.mirrors,
                    body: EstablishMirrorRequest(
                        volume: volume, target: target, extentSize: extent, discardTargetChanges: discardTargetChanges,
                        asynchronousLag: lag),
                    as: MirrorDTO.self)
                try await finish(mirror, wait: wait, options: options)
            }
        }
    }

    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show a mirror: state, resync progress, lag, throughput, last error.")
        @OptionGroup var options: ClientOptions
        @Argument var volume: String

        func run() async throws {
            try await runClient {
                let mirror = try await options.client.get(APIPath.mirror(volume), as: MirrorDTO.self)
                if options.json { try Output.json(mirror) } else { show(mirror) }
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List this daemon's mirrored volumes.")
        @OptionGroup var options: ClientOptions

        func run() async throws {
            try await runClient {
                let mirrors = try await options.client.get(APIPath.mirrors, as: [MirrorDTO].self)
                if options.json { return try Output.json(mirrors) }
                Output.table(
                    ["VOLUME", "TARGET", "STATE", "CHANGED", "LAG", "LAST ERROR"],
                    mirrors.map {
                        [
                            $0.volume, $0.target, $0.state, "\($0.changedExtents)/\($0.extentCount)", Output.size($0.lagBytes),
                            $0.lastError ?? "-",
                        ]
                    })
            }
        }
    }

    struct Sever: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Split the mirror on purpose: writes are tracked here; the target volume becomes usable there.")
        @OptionGroup var options: ClientOptions
        @Argument var volume: String

        func run() async throws {
            try await runClient {
                let mirror = try await options.client.send(
                    .POST, APIPath.mirrorAction(volume, "sever"), body: [String: String](), as: MirrorDTO.self)
                if options.json { try Output.json(mirror) } else { show(mirror) }
            }
        }
    }

    struct Reestablish: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "re-establish",
            abstract: "Resume a fractured or severed mirror, copying only the extents changed since.")
        @OptionGroup var options: ClientOptions
        @Argument var volume: String
        @Flag(help: "The target volume was written while apart: overwrite its changes with this volume's data.")
        var discardTargetChanges = false
        @Flag(
            help: "The target volume was written while apart (or promoted): copy its changed extents here first, replacing this side's changes there.")
        var takeTargetChanges = false
        @Flag(help: "Compare each changed extent's SHA-256 on both sides first and send only those that differ.")
        var checksum = false
        @Flag(help: "Wait for the resync to finish, showing progress.") var wait = false

        func run() async throws {
            if discardTargetChanges && takeTargetChanges {
                throw CLIError(
                    message: "choose one of --discard-target-changes and --take-target-changes, not both",
                    exitCode: ExitStatus.usage)
            }
            try await runClient {
                let mirror = try await options.client.send(
                    .POST, APIPath.mirrorAction(volume, "re-establish"),
                    body: ReestablishMirrorRequest(
                        discardTargetChanges: discardTargetChanges ? true : nil, takeTargetChanges: takeTargetChanges ? true : nil,
                        checksum: checksum ? true : nil),
                    as: MirrorDTO.self)
                try await finish(mirror, wait: wait, options: options)
            }
        }
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Stop mirroring VOLUME for good; both volumes stay (the target's pairing is dropped if reachable).")
        @OptionGroup var options: ClientOptions
        @Argument var volume: String

        func run() async throws {
            try await runClient {
                try await options.client.send(.DELETE, APIPath.mirror(volume), body: nil)
                if !options.json { print("mirror of '\(volume)' removed") }
            }
        }
    }

    struct SetFrameSize: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "set-frame-size", abstract: "Set the largest data payload per frame (4K to 32M).")
        @OptionGroup var options: ClientOptions
        @Argument var volume: String
        @Argument(help: "Bytes, or a number with K, M.") var size: String

        func run() async throws {
            let bytes = try parseSize(size, what: "frame size")
            guard bytes <= UInt64(UInt32.max) else { throw ValidationError("frame size too large") }
            try await runClient {
                let mirror = try await options.client.send(
                    .POST, APIPath.mirrorAction(volume, "frame-size"), body: MirrorFrameSizeRequest(bytes: UInt32(bytes)),
                    as: MirrorDTO.self)
                if options.json { try Output.json(mirror) } else { show(mirror) }
            }
        }
    }

    struct Target: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Ask VOLUME's target daemon for its volumes: size, allocation, full, failed, mirror state.")
        @OptionGroup var options: ClientOptions
        @Argument var volume: String

        func run() async throws {
            try await runClient {
                let status = try await options.client.get(APIPath.mirrorAction(volume, "target"), as: MirrorTargetStatusDTO.self)
                if options.json { return try Output.json(status) }
                print("target pool: \(Output.size(status.availableBytes)) free")
                Output.table(
                    ["VOLUME", "SIZE", "ALLOCATED", "ROLE", "STATE", "FULL", "FAILED"],
                    status.volumes.map {
                        [
                            $0.name, Output.size($0.size), Output.size($0.allocatedBytes), $0.role,
                            $0.state.isEmpty ? "-" : $0.state, $0.full ? "yes" : "no", $0.failed ? "yes" : "no",
                        ]
                    })
            }
        }
    }
}

/// Prints a mirror after a job-starting command; with --wait follows the resync first.
private func finish(_ started: MirrorDTO, wait: Bool, options: ClientOptions) async throws {
    var mirror = started
    if wait, var job = mirror.job {
        var ended = try await waitForJob(job.id, client: options.client, quiet: options.json)
        mirror = try await options.client.get(APIPath.mirror(mirror.volume), as: MirrorDTO.self)
        // A resync that found extents changed meanwhile starts another pass: follow it too.
        while ended.state == "succeeded", mirror.state == "synchronizing", let next = mirror.job, next.id != job.id {
            job = next
            ended = try await waitForJob(next.id, client: options.client, quiet: options.json)
            mirror = try await options.client.get(APIPath.mirror(mirror.volume), as: MirrorDTO.self)
        }
        if ended.state != "succeeded" {
            if options.json { try Output.json(mirror) } else { show(mirror) }
            throw CLIError(
                message: "resync \(ended.state): \(ended.message ?? "")",
                exitCode: ended.state == "failed" ? ExitStatus.failure : ExitStatus.conflict)
        }
    }
    if options.json { try Output.json(mirror) } else { show(mirror) }
}

private func show(_ mirror: MirrorDTO) {
    var fields: [(String, String)] = [
        ("volume", mirror.volume), ("target", mirror.target), ("state", mirror.state),
        (
            "mode",
            mirror.asynchronousLagLimit.map {
                "ASYNCHRONOUS: up to \(Output.size($0)) unacknowledged by the target (now \(Output.size(mirror.unacknowledgedBytes ?? 0)))"
            } ?? "synchronous"
        ),
        ("connected", mirror.connected ? "yes" : "no"),
        ("changed", "\(mirror.changedExtents) of \(mirror.extentCount) extents of \(Output.size(mirror.extentSize))"),
        ("lag", "\(Output.size(mirror.lagBytes)) to resync"),
        (
            "replicated",
            "\(Output.size(mirror.bytesReplicated)) since start (\(Output.size(mirror.throughputBytesPerSecond ?? 0))/s now), "
                + "\(mirror.retransmissions) frames resent, \(mirror.fractures) fractures"
        ),
        ("frame size", Output.size(UInt64(mirror.frameSize))),
        ("generations", "pair \(mirror.pairID), current \(mirror.generation), synced \(mirror.syncedGeneration)"),
    ]
    if mirror.takingTargetChanges == true {
        fields.append(("taking", "the target's changes: \(mirror.pullExtents ?? 0) extents still to copy back"))
    }
    if let last = mirror.lastResync {
        var text = "\(last.sent) extents sent"
        if last.compared > 0 { text = "\(last.compared) compared, \(last.sent) sent, \(last.skipped) skipped (equal)" }
        if last.pulled > 0 { text = "\(last.pulled) taken from the target; " + text }
        fields.append(("last resync", text))
    }
    if let job = mirror.job { fields.append(("job", "\(job.id) \(job.kind) \(job.state) \(progressText(job))")) }
    if let error = mirror.lastError { fields.append(("last error", error)) }
    Output.fields(fields)
}
