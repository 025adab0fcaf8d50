/// Limits of the mirror protocol. Each one bounds memory a peer can make the other allocate.
public enum MirrorLimits {
    /// Protocol version carried by challenge and hello; a mismatch is refused with a sentence.
    public static let protocolVersion: UInt16 = 1
    /// Largest payload of any frame: the largest data frame (`maximumFrameSize`) plus its 16-byte header.
    /// A header announcing more is a broken or hostile peer: the connection is closed.
    public static let maximumPayload: UInt32 = maximumFrameSize + 64
    /// Largest data a write frame carries (`set frame-size` upper bound): NBD's 32 MiB payload convention,
    /// so one host write never needs more than one frame at the largest setting.
    public static let maximumFrameSize: UInt32 = 32 << 20
    /// Smallest settable frame size: one 4 KiB block, the unit hosts write.
    public static let minimumFrameSize: UInt32 = 4 << 10
    /// Default data per frame: 1 MiB keeps a frame's retransmission cheap and still amortizes the 28 bytes
    /// of framing to nothing.
    public static let defaultFrameSize: UInt32 = 1 << 20
    /// Longest string field (volume and node names are at most 128 bytes; error messages are sentences).
    public static let maximumStringLength = 4096
    /// Nonce length of the challenge (a SHA-256 block's worth of entropy is more than enough).
    public static let nonceLength = 32
    /// Length of the HMAC-SHA256 proof in hello.
    public static let proofLength = 32
}
