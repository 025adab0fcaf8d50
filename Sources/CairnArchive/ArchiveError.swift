/// Why an archive could not be written, read or applied: a code scripts can switch on and a sentence
/// that says what is wrong and where.
public struct ArchiveError: Error, Sendable, CustomStringConvertible {
    public struct Code: RawRepresentable, Hashable, Sendable {
        public let rawValue: String
        public init(rawValue: String) { self.rawValue = rawValue }

        /// Not an archive, or a version this build does not read.
        public static let notAnArchive = Code(rawValue: "not_an_archive")
        /// A checksum does not match, or a field is out of range: the bytes were damaged.
        public static let corrupt = Code(rawValue: "corrupt")
        /// The stream ends before its trailer.
        public static let truncated = Code(rawValue: "truncated")
        /// Incremental archives that do not form one chain from a full archive.
        public static let brokenChain = Code(rawValue: "broken_chain")
        /// The file could not be opened, read or written.
        public static let io = Code(rawValue: "io")
        /// The caller asked for something impossible (a record past the end of the volume, ...).
        public static let invalidArgument = Code(rawValue: "invalid_argument")
    }

    public var code: Code
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }
}
