/// Magic numbers of the NBD wire protocol (proto.md, "Handshake" and "Transmission").
///
/// They are the first bytes of every message, so a peer speaking something else is detected at once.
public enum NBDMagic {
    /// `NBDMAGIC` ("INIT_PASSWD"), the first 8 bytes the server sends.
    public static let initPassword: UInt64 = 0x4e42_444d_4147_4943
    /// `IHAVEOPT`: follows `NBDMAGIC` in the newstyle greeting and starts every client option.
    public static let option: UInt64 = 0x4948_4156_454F_5054
    /// Starts every option reply of fixed newstyle negotiation.
    public static let optionReply: UInt64 = 0x0003_e889_0455_65a9
    /// `NBD_REQUEST_MAGIC`: compact (28-byte) request header.
    public static let request: UInt32 = 0x2560_9513
    /// `NBD_EXTENDED_REQUEST_MAGIC`: 32-byte request header, used once extended headers are negotiated.
    public static let extendedRequest: UInt32 = 0x21e4_1c71
    /// `NBD_SIMPLE_REPLY_MAGIC`.
    public static let simpleReply: UInt32 = 0x6744_6698
    /// `NBD_STRUCTURED_REPLY_MAGIC`.
    public static let structuredReply: UInt32 = 0x668e_33ef
    /// `NBD_EXTENDED_REPLY_MAGIC`: 32-byte reply chunk header.
    public static let extendedReply: UInt32 = 0x6e8a_278c
}
