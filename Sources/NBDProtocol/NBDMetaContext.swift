/// Names and flags of the metadata contexts this layer knows (proto.md "Metadata querying").
public enum NBDMetaContext {
    /// The one context the spec defines.
    public static let baseAllocation = "base:allocation"
    /// The namespace of contexts the spec defines.
    public static let baseNamespace = "base"
}

/// Status flags of the `base:allocation` context (proto.md "base:allocation metadata context").
public struct NBDAllocationState: OptionSet, Sendable, Hashable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// `NBD_STATE_HOLE`: not allocated.
    public static let hole = NBDAllocationState(rawValue: 1 << 0)
    /// `NBD_STATE_ZERO`: reads as zeroes.
    public static let zero = NBDAllocationState(rawValue: 1 << 1)
}
