import NBDProtocol

extension NBDExportCapabilities {
    /// The transmission flags these capabilities expose (proto.md "Transmission flags"). SEND_DF is added
    /// by the handshake once structured replies are negotiated. Write-type commands are not advertised on
    /// a read-only export, which refuses them with EPERM anyway; FAST_ZERO needs WRITE_ZEROES.
    public var transmissionFlags: NBDTransmissionFlags {
        var flags: NBDTransmissionFlags = [.hasFlags]
        if contains(.readOnly) {
            flags.insert(.readOnly)
        } else {
            if contains(.trim) { flags.insert(.sendTrim) }
            if contains(.writeZeroes) {
                flags.insert(.sendWriteZeroes)
                if contains(.fastZero) { flags.insert(.sendFastZero) }
            }
        }
        if contains(.flush) { flags.insert(.sendFlush) }
        if contains(.fua) { flags.insert(.sendFUA) }
        if contains(.rotational) { flags.insert(.rotational) }
        if contains(.cache) { flags.insert(.sendCache) }
        if contains(.multiConnection) { flags.insert(.canMultiConn) }
        return flags
    }
}
