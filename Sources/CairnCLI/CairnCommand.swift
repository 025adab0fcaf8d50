import ArgumentParser

/// `cairn`: the daemon and its command-line client.
public struct CairnCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "cairn",
        abstract: "A software storage array: thin volumes in a pool, served over NBD.",
        discussion: """
            Start the daemon with `cairn serve`; the other commands talk to it through its management API
            (the unix socket cairn.sock in the pool directory).
            """,
        subcommands: [
            ServeCommand.self, VolumeCommand.self, SnapshotCommand.self, DedupCommand.self, PoolCommand.self,
            JobCommand.self, CopyAndWriteCommand.self, CowMapCommand.self, CloneGroupCommand.self,
            MirrorCommand.self, BackupCommand.self,
        ]
    )

    public init() {}
}

/// Runs a client command body, turning `CLIError` into its message on stderr and its exit code.
func runClient(_ body: () async throws -> Void) async throws {
    do {
        try await body()
    } catch let error as CLIError {
        printError(error.message)
        throw ArgumentParser.ExitCode(error.exitCode)
    }
}

func printError(_ message: String) {
    var stderr = StandardError()
    print("cairn: \(message)", to: &stderr)
}

struct StandardError: TextOutputStream {
    mutating func write(_ string: String) {
        FileHandleStandardError.write(string)
    }
}

/// Entry point for the `cairn` executable (kept here so the executable target stays a one-liner).
public enum CairnMain {
    public static func main() async {
        await CairnCommand.main()
    }
}
