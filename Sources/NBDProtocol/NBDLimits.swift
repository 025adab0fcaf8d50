/// Limits the protocol layer enforces. Each one says where it comes from.
public enum NBDLimits {
    /// proto.md "Conventions": a string "MUST be no longer than 4096 bytes" (export names, queries, messages).
    public static let maximumStringLength = 4096

    /// Largest option data accepted. The largest well-formed option this server understands is a
    /// LIST/SET_META_CONTEXT with a 4096-byte name and a handful of 4096-byte queries; anything larger is
    /// treated as a denial-of-service attempt, which proto.md ("Termination of the session during option
    /// haggling") lets a server answer with a hard disconnect. nbdkit refuses oversized options the same way.
    public static let maximumOptionDataLength = 64 * 1024

    /// Options accepted per connection before the server hangs up. nbdkit uses 32; `nbdinfo --list` sends
    /// two per export (INFO + LIST_META_CONTEXT), so this leaves room to list ~60 exports.
    public static let maximumOptionCount = 128

    /// Largest WRITE payload buffered (and largest READ served): 2^25, the NBD_MAX_BUFFER_SIZE of qemu and
    /// the size proto.md ("Block size constraints") says SHOULD NOT be considered a denial of service.
    public static let maximumPayload = 32 * 1024 * 1024

    /// WRITE payloads above `maximumPayload` but not above this are read and thrown away without being
    /// buffered, so the server can answer EINVAL and keep the connection (proto.md lets the server hard
    /// disconnect instead; nbdkit's `skip_over_write_buffer` draws the same line at twice its maximum).
    /// Longer payloads end the connection.
    public static let maximumDiscardedPayload = 2 * maximumPayload

    /// proto.md "NBD_CMD_BLOCK_STATUS": "a server SHOULD NOT send more than 2^20 status descriptors in a
    /// single chunk".
    public static let maximumBlockStatusDescriptors = 1 << 20

    /// proto.md "NBD_CMD_FLAG_DF": "the server MUST support unfragmented reads in which the client's
    /// request length does not exceed 65,536 bytes".
    public static let minimumUnfragmentedRead = 65_536
}
