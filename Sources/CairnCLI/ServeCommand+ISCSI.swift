import CairnDaemon

extension ServeCommand {
    /// `--iscsi-listen` / `--no-iscsi` over the file's `iscsi: {listen: HOST:PORT, enabled: BOOL}`.
    func applyISCSI(file: ServeConfigFile.ISCSI?, to daemon: inout DaemonConfiguration) throws {
        if noIscsi || (iscsiListen == nil && file?.enabled == false) {
            daemon.iscsiPort = nil
            return
        }
        guard let listen = iscsiListen ?? file?.listen else { return }
        let (host, port) = try Self.parseListen(listen)
        daemon.iscsiHost = host
        daemon.iscsiPort = port
        daemon.iscsiPortExplicit = true
    }

    /// "PORT", "HOST:PORT" or "[IPv6]:PORT".
    static func parseListen(_ text: String) throws -> (host: String?, port: Int) {
        func port(_ s: Substring) throws -> Int {
            guard let n = Int(s), (0...65535).contains(n) else {
                throw ConfigError("the iSCSI listen address '\(text)' needs a port 0...65535 (HOST:PORT)")
            }
            return n
        }
        if let n = Int(text) { return (nil, try port(Substring(String(n)))) }
        guard let colon = text.lastIndex(of: ":") else {
            throw ConfigError("the iSCSI listen address '\(text)' is not HOST:PORT")
        }
        var host = text[..<colon]
        if host.hasPrefix("["), host.hasSuffix("]") { host = host.dropFirst().dropLast() }
        guard !host.isEmpty else { throw ConfigError("the iSCSI listen address '\(text)' has an empty host") }
        return (String(host), try port(text[text.index(after: colon)...]))
    }
}
