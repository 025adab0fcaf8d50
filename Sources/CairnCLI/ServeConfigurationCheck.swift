import ArgumentParser

/// The configuration check of `cairn serve --config FILE --check-config`, without printing or serving:
/// the file and every value in it judged exactly as a starting daemon judges them.
public enum ServeConfigurationCheck {
    /// Throws the error `cairn serve` would print for `configFile`.
    public static func check(configFile: String, dataDirectory: String) throws {
        let command = try ServeCommand.parse(["--config", configFile, "--data-dir", dataDirectory])
        // The text `--check-config` prints is built too.
        _ = ServeCommand.describe(try command.resolvedSettings())
    }
}
