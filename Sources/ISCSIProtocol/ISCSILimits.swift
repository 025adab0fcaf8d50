/// Limits the iSCSI layer negotiates or enforces. Each one says where it comes from.
public enum ISCSILimits {
    /// RFC 7143 §11.2: the Basic Header Segment is always 48 bytes.
    public static let basicHeaderLength = 48

    /// RFC 7143 §13.12: before MaxRecvDataSegmentLength is negotiated (login and any PDU whose value is not
    /// declared), a data segment may be 8192 bytes.
    public static let defaultDataSegmentLength: UInt32 = 8192

    /// The data segment this target declares it receives (RFC 7143 §13.12, 512..2^24-1). 256 KiB is what
    /// Linux's LIO declares by default and lets a 256 KiB write arrive as one immediate or Data-Out PDU.
    public static let targetMaxRecvDataSegmentLength: UInt32 = 256 << 10

    /// Largest solicited + unsolicited burst this target accepts (RFC 7143 §13.13). 1 MiB, LIO's default;
    /// larger writes take several R2Ts.
    public static let targetMaxBurstLength: UInt32 = 1 << 20

    /// Largest unsolicited burst (RFC 7143 §13.14); 64 KiB is the RFC's default.
    public static let targetFirstBurstLength: UInt32 = 64 << 10

    /// Data segments above this end the connection (never buffered), whatever was negotiated: the
    /// protocol's own field is 24 bits (RFC 7143 §11.2.1.5).
    public static let maximumDataSegmentLength: UInt32 = (1 << 24) - 1

    /// Commands in flight per session: MaxCmdSN is ExpCmdSN + this - 1 (RFC 7143 §4.2.2.1). 128 lets
    /// qemu's depth-64 benchmarks and ESXi's default queue depth (64..128) run without waiting on the window.
    public static let commandWindow: UInt32 = 128

    /// Largest SCSI transfer one command may ask for (READ/WRITE, in bytes): 32 MiB, the same payload
    /// bound the NBD listener has, and advertised as MAXIMUM TRANSFER LENGTH in VPD page B0.
    public static let maximumTransferLength: UInt32 = 32 << 20

    /// Bytes of key=value text accepted during one login or text negotiation (several PDUs with the C
    /// bit). RFC 7143 §6.1 allows a target to bound this; 64 KiB is far above what any initiator sends.
    public static let maximumTextLength = 64 << 10

    /// Login PDUs before the connection is closed: a login that never finishes does not hold a session
    /// forever (the handler also has a deadline).
    public static let maximumLoginExchanges = 32

    /// UNMAP block descriptors accepted in one command (VPD B0 MAXIMUM UNMAP BLOCK DESCRIPTOR COUNT).
    public static let maximumUnmapDescriptors: UInt32 = 256

    /// Blocks one UNMAP or WRITE SAME may cover (VPD B0 MAXIMUM UNMAP LBA COUNT / MAXIMUM WRITE SAME
    /// LENGTH): 512 MiB of 512-byte blocks, so one command does not hold an I/O thread for long (and
    /// libiscsi's conformance suite holds targets to at most 2^20).
    public static let maximumUnmapBlocks: UInt32 = 1 << 20

    /// Blocks one COMPARE AND WRITE may cover (VPD B0 MAXIMUM COMPARE AND WRITE LENGTH): the most the
    /// CDB's one-byte field can say; VMware's ATS uses one block.
    public static let maximumCompareAndWriteBlocks: UInt8 = 255
}
