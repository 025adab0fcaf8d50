/// A full archive followed by its increments, in order: what a restore applies.
public enum ArchiveChain {
    /// Checks that `headers` (in the order given) form one chain: a full archive first, then each
    /// increment naming the one before it as its base, all of the same volume size. Says which link is
    /// missing or out of place otherwise.
    public static func check(_ headers: [ArchiveHeader]) throws {
        guard let first = headers.first else {
            throw ArchiveError(.invalidArgument, "no archive given")
        }
        guard first.kind == .full else {
            throw ArchiveError(
                .brokenChain,
                "the first archive (\(first.archiveID)) is an increment of \(first.baseArchiveID ?? "?"); "
                    + "give the full archive first, then each increment in order")
        }
        var seen: Set<String> = []
        for (previous, next) in zip(headers, headers.dropFirst()) {
            seen.insert(previous.archiveID)
            guard next.kind == .incremental, next.baseArchiveID == previous.archiveID,
                next.chainIndex == previous.chainIndex + 1
            else {
                let base = next.baseArchiveID ?? "none (a full archive)"
                throw ArchiveError(
                    .brokenChain,
                    "archive \(next.archiveID) follows \(previous.archiveID) but its base is \(base)"
                        + (seen.contains(next.baseArchiveID ?? "") ? " (order the archives as they were taken)" : " (an archive of the chain is missing)"))
            }
            guard next.volumeSize == previous.volumeSize else {
                throw ArchiveError(.brokenChain, "archive \(next.archiveID) is of a volume of another size")
            }
        }
    }
}
