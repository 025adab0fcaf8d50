/// Cairn's copy-on-write extension to NBD (docs/NBD-EXTENSIONS.md): a metadata context that says where
/// a write would copy, and a command that copies a chunk inside the server while writing into it
/// (COPY_AND_WRITE). Both exist on a connection only after the client selected the context with
/// NBD_OPT_SET_META_CONTEXT, so clients that do not ask see a standard NBD server.
public enum NBDCopyOnWrite {
    /// The context's namespace. proto.md ("Metadata querying"): namespaces "MUST" be `base`,
    /// `nbd-server`, `x-*` "for local experiments", or one registered on the NBD mailing list (today only
    /// `qemu`). Until `cairn` is registered, the `x-` form is the only legal spelling.
    public static let namespace = "x-cairn"
    /// The context name: selecting it enables BLOCK_STATUS answers for it and NBD_CMD_CAIRN_COPY_AND_WRITE.
    public static let contextName = namespace + ":copy-on-write"
    /// The fixed part of the command's payload: source offset (64), copy size (32), buffer offset (32).
    public static let payloadHeaderLength = 16
}

extension NBDMetaContext {
    /// `x-cairn:copy-on-write` (see `NBDCopyOnWrite`).
    public static let cairnCopyOnWrite = NBDCopyOnWrite.contextName
}

/// Status flags of the `x-cairn:copy-on-write` context. As proto.md asks of every context, a status of 0
/// is always safe to report: it only means the server does not know of a copy a write would cause.
public struct NBDCopyOnWriteState: OptionSet, Sendable, Hashable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// Bit 0, `CAIRN_STATE_SHARED`: the extent's data is shared (with a snapshot, a clone's parent or a
    /// deduplicated twin), so a write here first copies the chunk it falls in.
    public static let shared = NBDCopyOnWriteState(rawValue: 1 << 0)
}

extension NBDCommandType {
    /// `NBD_CMD_CAIRN_COPY_AND_WRITE` (0xCA01): only valid once `x-cairn:copy-on-write` is selected.
    ///
    /// proto.md assigns request types from 0 upwards (0...8 today, RESIZE being the newest) and asks
    /// third parties to coordinate new ones on the mailing list. A value in the top half of the 16-bit
    /// space, with "CA" in its high byte, keeps clear of every number the spec may hand out next; and
    /// because the command is refused unless the context was negotiated, a collision could only ever
    /// reach a client that asked for Cairn's extension by name.
    public static let cairnCopyAndWrite = NBDCommandType(rawValue: 0xCA01)
}
