/// Turns the extents an export reports into the descriptors one status chunk may carry.
public enum NBDBlockStatusShaper {
    /// - Parameters:
    ///   - extents: extents from the request's offset on, as the export reported them.
    ///   - requestLength: the request's effect length; descriptors are clipped to it.
    ///   - requestOne: NBD_CMD_FLAG_REQ_ONE: "each chunk contains exactly one descriptor where the *length*
    ///     of the descriptor MUST NOT be greater than the *length* of the request".
    /// - Returns: nonempty descriptors with nonzero lengths, neighbours merged when their flags match (the
    ///   spec's "SHOULD use different *status* values between consecutive descriptors"), at most
    ///   `NBDLimits.maximumBlockStatusDescriptors`; nil if the export reported no usable extent.
    public static func descriptors(
        from extents: [NBDBlockDescriptor],
        requestLength: UInt64,
        requestOne: Bool
    ) -> [NBDBlockDescriptor]? {
        var result: [NBDBlockDescriptor] = []
        var covered: UInt64 = 0
        for extent in extents where extent.length > 0 {
            guard covered < requestLength else { break }
            let length = min(extent.length, requestLength - covered)
            covered += length
            if let last = result.last, last.flags == extent.flags {
                result[result.count - 1].length = last.length + length
            } else {
                guard result.count < NBDLimits.maximumBlockStatusDescriptors else { break }
                result.append(NBDBlockDescriptor(length: length, flags: extent.flags))
            }
        }
        guard !result.isEmpty else { return nil }
        return requestOne ? [result[0]] : result
    }
}
