/// Python fragments the python3-libnbd tests share, against the NBD server in-process and against a
/// `cairn serve`: the same steps, checked the same way, whatever serves the exports. Each fragment is
/// top-level Python ending in a newline, to be joined with the test's own lines.
public enum LibnbdScript {
    /// Connects in option mode to `sys.argv[1]` and records the export list (`out["list"]`, sorted).
    public static let optionModeList = """
        import json, sys, nbd
        h = nbd.NBD()
        h.set_opt_mode(True)
        h.connect_uri(sys.argv[1])
        out = {}
        names = []
        h.opt_list(lambda name, desc: names.append([name, desc]) or 0)
        out["list"] = sorted(names)

        """

    /// Still in option mode: lists `export`'s meta contexts, selects base:allocation, GOes, then records
    /// the size, what was negotiated and a 4 KiB write of 0x07 at 8 KiB read back; prints `out` as JSON.
    public static func goWriteAndReadBack(export: String) -> String {
        """
        contexts = []
        h.set_export_name("\(export)")
        h.opt_list_meta_context(lambda ctx: contexts.append(ctx) or 0)
        out["contexts"] = contexts
        h.add_meta_context("base:allocation")
        h.opt_go()
        out["size"] = h.get_size()
        out["meta"] = h.can_meta_context("base:allocation")
        out["structured"] = h.get_structured_replies_negotiated()
        h.pwrite(b"\\x07" * 4096, 8192)
        out["read"] = list(set(h.pread(4096, 8192)))
        h.shutdown()
        print(json.dumps(out))

        """
    }

    /// `attempt(out, name, fn)`: runs `fn` and records under `name` 0, or the errno libnbd reports.
    public static let attempt = """
        import json, sys, nbd
        def attempt(out, name, fn):
            try:
                fn()
                out[name] = 0
            except nbd.Error as e:
                out[name] = e.errnum

        """
}
