/// The 16 transmission flags sent with the export size (proto.md "Transmission flags").
public struct NBDTransmissionFlags: OptionSet, Sendable, Hashable {
    public let rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    /// `NBD_FLAG_HAS_FLAGS`: MUST always be set.
    public static let hasFlags = NBDTransmissionFlags(rawValue: 1 << 0)
    /// `NBD_FLAG_READ_ONLY`.
    public static let readOnly = NBDTransmissionFlags(rawValue: 1 << 1)
    /// `NBD_FLAG_SEND_FLUSH`.
    public static let sendFlush = NBDTransmissionFlags(rawValue: 1 << 2)
    /// `NBD_FLAG_SEND_FUA`.
    public static let sendFUA = NBDTransmissionFlags(rawValue: 1 << 3)
    /// `NBD_FLAG_ROTATIONAL`.
    public static let rotational = NBDTransmissionFlags(rawValue: 1 << 4)
    /// `NBD_FLAG_SEND_TRIM`.
    public static let sendTrim = NBDTransmissionFlags(rawValue: 1 << 5)
    /// `NBD_FLAG_SEND_WRITE_ZEROES`.
    public static let sendWriteZeroes = NBDTransmissionFlags(rawValue: 1 << 6)
    /// `NBD_FLAG_SEND_DF`: only with structured replies or extended headers.
    public static let sendDF = NBDTransmissionFlags(rawValue: 1 << 7)
    /// `NBD_FLAG_CAN_MULTI_CONN`.
    public static let canMultiConn = NBDTransmissionFlags(rawValue: 1 << 8)
    /// `NBD_FLAG_SEND_RESIZE` (experimental RESIZE extension; never set by this server).
    public static let sendResize = NBDTransmissionFlags(rawValue: 1 << 9)
    /// `NBD_FLAG_SEND_CACHE`.
    public static let sendCache = NBDTransmissionFlags(rawValue: 1 << 10)
    /// `NBD_FLAG_SEND_FAST_ZERO`: MUST be clear unless `sendWriteZeroes` is set.
    public static let sendFastZero = NBDTransmissionFlags(rawValue: 1 << 11)
}
