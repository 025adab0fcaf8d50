/// The 16 handshake flags the server sends in its greeting (proto.md "Handshake flags").
public struct NBDHandshakeFlags: OptionSet, Sendable, Hashable {
    public let rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    /// `NBD_FLAG_FIXED_NEWSTYLE`: the server speaks fixed newstyle negotiation.
    public static let fixedNewstyle = NBDHandshakeFlags(rawValue: 1 << 0)
    /// `NBD_FLAG_NO_ZEROES`: the server can omit the 124 zero bytes after NBD_OPT_EXPORT_NAME.
    public static let noZeroes = NBDHandshakeFlags(rawValue: 1 << 1)
}

/// The 32 client flags that answer the greeting (proto.md "Client flags").
///
/// `rawValue` keeps bits this server does not know so the handshake can refuse them.
public struct NBDClientFlags: OptionSet, Sendable, Hashable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// `NBD_FLAG_C_FIXED_NEWSTYLE`.
    public static let fixedNewstyle = NBDClientFlags(rawValue: 1 << 0)
    /// `NBD_FLAG_C_NO_ZEROES`.
    public static let noZeroes = NBDClientFlags(rawValue: 1 << 1)

    /// Every flag a client may set against a server that advertised `fixedNewstyle | noZeroes`.
    public static let known: NBDClientFlags = [.fixedNewstyle, .noZeroes]
}
