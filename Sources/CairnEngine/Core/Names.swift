/// Rules for names of volumes and snapshots. Names become NBD export names, file-like CLI arguments
/// and URL path components, so they are restricted to a portable, unambiguous alphabet.
public enum NameRules {
    /// Long enough for any sensible naming scheme, short enough to fit one NBD string comfortably.
    public static let maximumLength = 128
    /// Characters allowed after the first (which must be a letter or digit): no '/', no '@' (the
    /// snapshot separator in export names), no spaces or control characters.
    static let allowed = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")

    /// Throws `.invalidArgument` with a sentence saying what is wrong with `name`.
    public static func validate(_ name: String, what: String = "volume") throws {
        guard !name.isEmpty else {
            throw EngineError(.invalidArgument, "a \(what) name cannot be empty")
        }
        guard name.utf8.count <= maximumLength else {
            throw EngineError(.invalidArgument, "\(what) name is longer than \(maximumLength) bytes")
        }
        guard let first = name.first, first.isASCII, first.isLetter || first.isNumber else {
            throw EngineError(.invalidArgument, "\(what) name '\(printable(name))' must start with a letter or digit")
        }
        if let bad = name.first(where: { !allowed.contains($0) }) {
            throw EngineError(
                .invalidArgument,
                "\(what) name '\(printable(name))' contains '\(printable(String(bad)))'; "
                    + "use letters, digits, '.', '_' and '-'")
        }
    }

    /// The name with control characters escaped, safe to echo back in a message.
    static func printable(_ name: String) -> String {
        String(name.unicodeScalars.prefix(maximumLength).map {
            $0.properties.generalCategory == .control ? "\\u{\(String($0.value, radix: 16))}" : String($0)
        }.joined())
    }
}
